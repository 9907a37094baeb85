// Session page: live countdown, warnings before the end, viewer count and
// state from the API, copy buttons, confirmation before Stop/Revoke.
import { serverClock } from '/static/server-clock.js';

const section = document.querySelector('section.session');

function formatLeft(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
}

if (section) {
  // Count on the server's clock, not the browser's: a browser clock minutes
  // ahead would otherwise see the end before it comes (and, reloading at 0,
  // reload every second forever).
  const clock = serverClock(Number(section.dataset.serverNow));
  const now = clock.now;
  let expiresAt = Number(section.dataset.expiresAt);
  const warnBefore = (section.dataset.warnBefore || '').split(',').filter(Boolean).map(Number);
  const out = section.querySelector('.countdown');
  const warning = section.querySelector('.warning');
  const left = () => Math.max(0, Math.round((expiresAt - now()) / 1000));
  const tick = () => {
    const s = left();
    out.textContent = formatLeft(s);
    const point = warnBefore.filter((w) => s <= w).sort((a, b) => a - b)[0];
    if (warning && point !== undefined && s > 0) {
      warning.hidden = false;
      warning.textContent = `This desktop ends in ${formatLeft(s)}. Save your work${document.querySelector('form[action$="/extend"]') ? ', or extend it' : ''}.`;
    } else if (warning && s === 0) {
      // The server says when it has really ended (the API answers 410): the poll below then reloads.
      warning.hidden = false;
      warning.textContent = 'The life-time of this desktop has run out; it is being stopped.';
    }
  };
  tick();
  setInterval(tick, 1000);
  const api = section.dataset.api;
  if (api) {
    // Only a page rendered while the desktop waited reloads when it starts (a page without a state never does).
    const waiting = section.dataset.state !== undefined && section.dataset.state !== 'running';
    const poll = async () => {
      const res = await clock.fetch(api).catch(() => null);
      if (!res) return;
      if (res.status === 410 || res.status === 404) return location.reload();
      if (!res.ok) return;
      const info = await res.json();
      // Waiting for a node: show where it is; once it runs, show the Connect button.
      if (waiting && info.state === 'running') return location.reload();
      const queueText = section.querySelector('.queue-text');
      if (queueText && info.queue) {
        const q = info.queue;
        queueText.textContent = q.state === 'PENDING'
          ? `waiting for a node${q.position ? `, number ${q.position} in the queue` : ''}${q.reason ? `; the scheduler says: ${q.reason}` : ''}`
          : `starting on ${q.node || 'a node'}`;
      }
      expiresAt = Date.parse(info.expiresAt);
      const viewers = section.querySelector('.viewers');
      if (viewers) viewers.textContent = `${info.viewers} (${info.viewOnlyViewers} view-only)`;
      const names = section.querySelector('.viewer-names');
      if (names && info.viewerNames) names.textContent = info.viewerNames.length ? `: ${[...new Set(info.viewerNames)].join(', ')}` : '';
    };
    // Every 5 s while it runs (2 s while it waits for a node); once the time is
    // up on the server's clock, every 2 s until the server says it has ended.
    const loop = async () => {
      await poll().catch(() => {}); // a failed poll (network, bad JSON) is retried at the next round
      setTimeout(loop, waiting || left() === 0 ? 2000 : 5000);
    };
    setTimeout(loop, waiting ? 2000 : Math.min(5000, Math.max(1000, expiresAt - now())));
  }
}
for (const button of document.querySelectorAll('button.copy')) {
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = 'Copied';
    } catch {
      button.previousElementSibling?.select?.();
    }
  });
}
for (const form of document.querySelectorAll('form[data-confirm]')) {
  form.addEventListener('submit', (event) => {
    if (!confirm(form.dataset.confirm)) event.preventDefault();
  });
}
