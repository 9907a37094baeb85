import test from 'ava';
import { clipboardDirections, clipboardModeOf, decideClipboardPolicy, effectiveClipboardMode } from '../../src/bridge/clipboard-policy.js';
import { CLIPBOARD_MODES, type ClipboardMode } from '../../src/config/schema.js';

const on = (mode: ClipboardMode) => clipboardDirections(mode);

test('each mode allows exactly its directions, and the name comes back from the directions', (t) => {
  t.deepEqual(on('both'), { toGuest: true, fromGuest: true });
  t.deepEqual(on('to-guest'), { toGuest: true, fromGuest: false });
  t.deepEqual(on('from-guest'), { toGuest: false, fromGuest: true });
  t.deepEqual(on('off'), { toGuest: false, fromGuest: false });
  for (const mode of CLIPBOARD_MODES) t.is(clipboardModeOf(on(mode)), mode);
});

// Every site × machine × link × viewOnlyClipboard: a direction is allowed only when site and machine both allow it;
// view-only never pastes and copies only with viewOnlyClipboard.
for (const site of CLIPBOARD_MODES) {
  for (const machine of CLIPBOARD_MODES) {
    test(`site ${site}, machine ${machine}: control and view-only viewers`, (t) => {
      const toGuest = on(site).toGuest && on(machine).toGuest;
      const fromGuest = on(site).fromGuest && on(machine).fromGuest;
      t.deepEqual(decideClipboardPolicy({ clipboard: site, viewOnlyClipboard: false }, machine, 'control'), { toGuest, fromGuest });
      t.deepEqual(decideClipboardPolicy({ clipboard: site, viewOnlyClipboard: true }, machine, 'control'), { toGuest, fromGuest }, 'viewOnlyClipboard does not touch control links');
      t.deepEqual(decideClipboardPolicy({ clipboard: site, viewOnlyClipboard: false }, machine, 'view'), { toGuest: false, fromGuest: false });
      t.deepEqual(decideClipboardPolicy({ clipboard: site, viewOnlyClipboard: true }, machine, 'view'), { toGuest: false, fromGuest });
      t.is(effectiveClipboardMode({ clipboard: site, viewOnlyClipboard: true }, machine, 'view'), fromGuest ? 'from-guest' : 'off');
      t.is(effectiveClipboardMode({ clipboard: site, viewOnlyClipboard: false }, machine, 'control'), clipboardModeOf({ toGuest, fromGuest }));
    });
  }
}

test('the stricter of the two wins, whichever side is stricter', (t) => {
  const site = (clipboard: ClipboardMode) => ({ clipboard, viewOnlyClipboard: false });
  t.is(effectiveClipboardMode(site('both'), 'to-guest', 'control'), 'to-guest');
  t.is(effectiveClipboardMode(site('to-guest'), 'both', 'control'), 'to-guest');
  t.is(effectiveClipboardMode(site('to-guest'), 'from-guest', 'control'), 'off');
  t.is(effectiveClipboardMode(site('off'), 'both', 'control'), 'off');
});
