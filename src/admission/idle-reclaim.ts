// selectIdleReclaims: pure. Which guests the purge loop asks (QMP balloon) to
// give memory back, and the target for each: running guests nobody has watched
// for balloon.idleAfterS, not already at or below the target. Guests with a
// GPU are never ballooned: VFIO pins all their memory for DMA, so the balloon
// cannot return any of it to the host (and admission counts it at 1x).
import type { SessionState } from '../store/session-rows.js';

export interface ReclaimCandidate {
  id: string;
  state: SessionState;
  viewers: number;
  idleSince: number | null;
  memoryMiB: number;
  balloonTargetMiB: number | null;
  gpus: number;
}

export interface Reclaim {
  id: string;
  targetMiB: number;
}

/** The balloon never goes below this: a guest needs some memory to stay alive. */
export const MIN_BALLOON_MIB = 64;

export function selectIdleReclaims(
  rows: readonly ReclaimCandidate[], skipIds: ReadonlySet<string>, now: number,
  balloon: { idleAfterS: number; idleTargetPercent: number },
): Reclaim[] {
  if (balloon.idleAfterS <= 0) return [];
  const out: Reclaim[] = [];
  for (const row of rows) {
    if (row.state !== 'running' || row.viewers > 0 || row.idleSince === null || skipIds.has(row.id)) continue;
    if (row.gpus > 0) continue; // pinned by VFIO (see the header)
    if (now - row.idleSince < balloon.idleAfterS * 1000) continue;
    const targetMiB = Math.max(MIN_BALLOON_MIB, Math.floor((row.memoryMiB * balloon.idleTargetPercent) / 100));
    if (row.balloonTargetMiB !== null && row.balloonTargetMiB <= targetMiB) continue;
    out.push({ id: row.id, targetMiB });
  }
  return out;
}
