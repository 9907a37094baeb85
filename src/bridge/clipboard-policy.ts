// The clipboard policy of one viewer: a pure decision from the site's policy
// (config bridge.clipboard, bridge.viewOnlyClipboard), the machine's own
// (machines/*.yml clipboard) and the viewer's link (control or view-only).
// The bridge enforces it (rfb-client-filter.ts); the viewer page only shows it
// (effectiveClipboardMode gives the name to put in a data attribute). No state.
import type { ClipboardMode } from '../config/schema.js';

export type ClipboardAccess = 'control' | 'view';

/** Which way clipboard text may move for one viewer. */
export interface ClipboardPolicy {
  /** Pasting: the viewer's clipboard into the guest. */
  readonly toGuest: boolean;
  /** Copying: the guest's clipboard to the viewer. */
  readonly fromGuest: boolean;
}

/** The site's part of the decision: config.bridge can be passed as it is. */
export interface SiteClipboardPolicy {
  readonly clipboard: ClipboardMode;
  /** Whether view-only viewers receive the guest's clipboard; they never paste. */
  readonly viewOnlyClipboard: boolean;
}

export const NO_CLIPBOARD: ClipboardPolicy = Object.freeze({ toGuest: false, fromGuest: false });
export const FULL_CLIPBOARD: ClipboardPolicy = Object.freeze({ toGuest: true, fromGuest: true });

/** The directions a mode allows. */
export function clipboardDirections(mode: ClipboardMode): ClipboardPolicy {
  return {
    toGuest: mode === 'both' || mode === 'to-guest',
    fromGuest: mode === 'both' || mode === 'from-guest',
  };
}

/** The mode that allows exactly these directions. */
export function clipboardModeOf(policy: ClipboardPolicy): ClipboardMode {
  if (policy.toGuest && policy.fromGuest) return 'both';
  if (policy.toGuest) return 'to-guest';
  if (policy.fromGuest) return 'from-guest';
  return 'off';
}

/**
 * What one viewer may do: the stricter of the site's and the machine's
 * policy (a direction is allowed only if both allow it), then the link:
 * a view-only viewer never pastes, and copies only where the site lets
 * view-only viewers receive the guest's clipboard.
 */
export function decideClipboardPolicy(
  site: SiteClipboardPolicy, machine: ClipboardMode, access: ClipboardAccess,
): ClipboardPolicy {
  const s = clipboardDirections(site.clipboard);
  const m = clipboardDirections(machine);
  const toGuest = s.toGuest && m.toGuest;
  const fromGuest = s.fromGuest && m.fromGuest;
  if (access === 'view') return { toGuest: false, fromGuest: fromGuest && site.viewOnlyClipboard };
  return { toGuest, fromGuest };
}

/**
 * The effective policy's name for a viewer page (e.g. data-clipboard="to-guest"):
 * what its clipboard controls may offer.
 */
export function effectiveClipboardMode(
  site: SiteClipboardPolicy, machine: ClipboardMode, access: ClipboardAccess,
): ClipboardMode {
  return clipboardModeOf(decideClipboardPolicy(site, machine, access));
}
