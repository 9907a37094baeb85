import test from 'ava';
import { DEFAULT_VIEWER_CAPS, decideViewerAdmission } from '../../src/bridge/viewer-caps.js';

const caps = { maxViewersPerLink: 8, maxViewersPerSession: 24, reservedControlViewers: 4 };

test('the defaults stay below QEMU\'s 32 VNC clients and leave room for the owner', (t) => {
  t.true(DEFAULT_VIEWER_CAPS.maxViewersPerSession < 32);
  t.true(DEFAULT_VIEWER_CAPS.maxViewersPerLink <= DEFAULT_VIEWER_CAPS.maxViewersPerSession - DEFAULT_VIEWER_CAPS.reservedControlViewers);
});

const table: Array<[string, { control: number; view: number }, 'control' | 'view', boolean, RegExp?]> = [
  ['an empty session takes a view-only viewer', { control: 0, view: 0 }, 'view', true],
  ['the 8th view-only viewer gets in', { control: 0, view: 7 }, 'view', true],
  ['the 9th view-only viewer is refused', { control: 0, view: 8 }, 'view', false, /view-only link already has 8 viewers \(the limit is 8\)/],
  ['control viewers do not count against the per-link cap', { control: 12, view: 7 }, 'view', true],
  ['view-only viewers never take the reserved slots', { control: 13, view: 7 }, 'view', false, /kept for its owner's link/],
  ['the owner gets in when view-only viewers are at their cap', { control: 0, view: 8 }, 'control', true],
  ['the owner gets in up to the session cap', { control: 15, view: 8 }, 'control', true],
  ['nobody gets in past the session cap', { control: 16, view: 8 }, 'control', false, /already has 24 viewers \(the limit is 24\)/],
];
for (const [name, current, access, admit, reason] of table) {
  test(`viewer caps: ${name}`, (t) => {
    const decision = decideViewerAdmission(current, access, caps);
    t.is(decision.admit, admit);
    if (!decision.admit && reason) t.regex(decision.reason, reason);
  });
}
