// The broker's JSON API as the benchmark uses it (POST/DELETE a session,
// /healthz). Every call is bounded by a timeout; a non-2xx answer is an error
// that carries the status and the body.

export interface CreatedSession {
  id: string;
  token: string;
  url: string;
  wsUrl: string;
  /** The view-only link's WebSocket (the bridge drops its input). */
  viewWsUrl: string;
  expiresAt: string;
}

export interface Healthz {
  status: string;
  version: string;
  accelerator: { accel: string; requested: string; reason: string };
  launcher: string;
  sessions: number;
  /** How late the broker's event loop ran over its last 10 s window (src/http/event-loop-delay.ts). */
  eventLoopDelay: { windowS: number; endedAt: string | null; samples: number; p50Ms: number; p99Ms: number; maxMs: number };
}

async function call(method: string, url: string, body?: unknown, timeoutMs = 60000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? { accept: 'application/json' } : { 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: res.status, text: await res.text() };
}

export async function createSession(baseUrl: string, request: { machine: string; cpus: number; memoryMiB: number; lifetimeS: number; user: string }): Promise<CreatedSession> {
  const { status, text } = await call('POST', `${baseUrl}/api/v1/sessions`, request);
  if (status !== 201) throw new Error(`POST /api/v1/sessions answered ${status}: ${text.slice(0, 500)}`);
  return JSON.parse(text) as CreatedSession;
}

export async function deleteSession(baseUrl: string, token: string): Promise<void> {
  const { status, text } = await call('DELETE', `${baseUrl}/api/v1/sessions/${token}`);
  // 410: it already ended (the guest powered off, or a previous DELETE won).
  if (status !== 204 && status !== 410) throw new Error(`DELETE /api/v1/sessions/… answered ${status}: ${text.slice(0, 500)}`);
}

export async function healthz(baseUrl: string): Promise<Healthz> {
  const { status, text } = await call('GET', `${baseUrl}/healthz`, undefined, 10000);
  if (status !== 200) throw new Error(`GET /healthz answered ${status}: ${text.slice(0, 500)}`);
  return JSON.parse(text) as Healthz;
}
