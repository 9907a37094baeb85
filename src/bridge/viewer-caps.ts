// How many viewers a session may have: a pure decision the bridge makes before
// the WebSocket upgrade. QEMU's VNC server takes at most 32 clients per display
// (ui/vnc.c, connections_limit); without caps of our own, 32 holders of a
// view-only link would lock the owner out. View-only viewers are capped per
// link and may never take the slots reserved for the control link; control
// viewers never count against view-only caps and only meet the session cap.

export interface ViewerCaps {
  /** View-only viewers of one session's view-only link. */
  readonly maxViewersPerLink: number;
  /** All viewers of one session, both links (keep it below QEMU's 32). */
  readonly maxViewersPerSession: number;
  /** Of the session cap, slots view-only viewers may never take. */
  readonly reservedControlViewers: number;
}

export const DEFAULT_VIEWER_CAPS: ViewerCaps = Object.freeze({
  maxViewersPerLink: 8, maxViewersPerSession: 24, reservedControlViewers: 4,
});

export type ViewerAdmission = { admit: true } | { admit: false; reason: string };

/** Whether one more viewer on a link of `access` fits, given the session's current viewers. */
export function decideViewerAdmission(
  current: { control: number; view: number },
  access: 'control' | 'view',
  caps: ViewerCaps,
): ViewerAdmission {
  const total = current.control + current.view;
  if (access === 'control') {
    if (total >= caps.maxViewersPerSession) {
      return {
        admit: false, reason: `this desktop already has ${total} viewers (the limit is ${caps.maxViewersPerSession})`,
      };
    }
    return { admit: true };
  }
  if (current.view >= caps.maxViewersPerLink) {
    return {
      admit: false,
      reason: `this view-only link already has ${current.view} viewers (the limit is ${caps.maxViewersPerLink})`,
    };
  }
  const forViewOnly = caps.maxViewersPerSession - caps.reservedControlViewers;
  if (total >= forViewOnly) {
    return {
      admit: false,
      reason: `this desktop already has ${total} viewers; the remaining places are kept for its owner's link`,
    };
  }
  return { admit: true };
}
