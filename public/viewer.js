// Full-window noVNC viewer. Connects to /ws/<token> on this server, scales the
// remote screen to the window, reconnects after network hiccups, and says
// clearly when the desktop has ended.
import RFB from '/novnc/core/rfb.js';
import { serverClock } from '/static/server-clock.js';

const status = document.getElementById('status');
const token = status.dataset.token;
let expiresAt = Number(status.dataset.expiresAt);
// The server's clock, not the browser's (which may be minutes off).
const clock = serverClock(Number(status.dataset.serverNow));
const viewOnly = status.dataset.access === 'view';
const warnBefore = (status.dataset.warnBefore || '').split(',').filter(Boolean).map(Number);
const others = document.getElementById('others');
// The ticket (logged-in viewers only) lets the session page show who is connected.
const ticket = status.dataset.ticket;
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${token}${ticket ? `?t=${encodeURIComponent(ticket)}` : ''}`;
let rfb = null;
let ended = false;
let retries = 0;

function show(text, kind = '') {
  status.textContent = text;
  status.className = `status ${kind}`;
}

function remaining() {
  const s = Math.max(0, Math.round((expiresAt - clock.now()) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min left` : `${m} min ${s % 60} s left`;
}

function connect() {
  show('Connecting…');
  rfb = new RFB(document.getElementById('screen'), wsUrl, { shared: true });
  // The server enforces view-only; this only stops the browser from trying.
  rfb.viewOnly = viewOnly;
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  window.qwdRfb = rfb;
  rfb.addEventListener('connect', () => {
    retries = 0;
    show(`${viewOnly ? 'View-only' : 'Connected'} · ${remaining()}`, 'quiet');
    rfb.focus();
  });
  rfb.addEventListener('disconnect', async (event) => {
    if (ended) return;
    // Ask the server why: an ended desktop answers 410, a live one 200.
    const answer = await clock.fetch(`/api/v1/sessions/${token}`).catch(() => null);
    if (answer && (answer.status === 410 || answer.status === 404)) {
      ended = true;
      const why = answer.status === 410 ? (await answer.json().catch(() => null))?.error?.message : null;
      show(why || 'This desktop has ended.', 'error');
      return;
    }
    if (retries++ < 10) {
      show(`Connection lost${event.detail.clean ? '' : ' unexpectedly'}; reconnecting…`, 'warn');
      setTimeout(connect, Math.min(500 * retries, 5000));
    } else {
      show('Cannot reach the desktop. Reload the page to try again.', 'error');
    }
  });
  rfb.addEventListener('desktopname', (event) => {
    document.title = `${event.detail.name} · qemu-web-desktop`;
  });
}

setInterval(() => {
  if (ended || !rfb) return;
  // Whole seconds, as shown (and as the session page counts): "ends in 6 s" from the moment it says 6 s.
  const s = Math.round((expiresAt - clock.now()) / 1000);
  if (warnBefore.some((w) => s <= w)) show(`This desktop ends in ${remaining().replace(' left', '')}: save your work.`, 'warn');
  else if (status.classList.contains('quiet')) status.textContent = `${viewOnly ? 'View-only' : 'Connected'} · ${remaining()}`;
}, 1000);

// Who else is here: a small indicator when others are watching.
setInterval(async () => {
  if (ended) return;
  const res = await clock.fetch(`/api/v1/sessions/${token}`).catch(() => null);
  if (!res || !res.ok) return;
  const info = await res.json();
  expiresAt = Date.parse(info.expiresAt);
  const count = Math.max(0, info.viewers - 1);
  others.hidden = count === 0;
  others.textContent = count === 1 ? '1 other person is connected' : `${count} other people are connected`;
}, 5000);

connect();
