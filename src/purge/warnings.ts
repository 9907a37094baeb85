// Pure selection of life-time warnings to send: for each running session with
// an address, the smallest configured point (seconds before the end) that has
// been reached and not yet warned about. Only one mail per purge run and
// session, even if several points were crossed (e.g. after a broker outage).

export interface WarningCandidate {
  id: string;
  state: string;
  expiresAt: number;
  email: string | null;
  warnedBeforeS: number | null;
}

export interface Warning {
  id: string;
  beforeS: number;
  remainingS: number;
}

export function selectWarnings(
  sessions: readonly WarningCandidate[], now: number, points: readonly number[],
): Warning[] {
  const out: Warning[] = [];
  for (const s of sessions) {
    if (s.state !== 'running' || !s.email) continue;
    const remainingS = Math.round((s.expiresAt - now) / 1000);
    if (remainingS <= 0) continue;
    const reached = points.filter((p) => remainingS <= p && (s.warnedBeforeS === null || p < s.warnedBeforeS));
    if (reached.length === 0) continue;
    out.push({ id: s.id, beforeS: Math.min(...reached), remainingS });
  }
  return out;
}
