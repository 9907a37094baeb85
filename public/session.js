// Session page: live countdown, warnings before the end, viewer count and
// state from the API, copy buttons, confirmation before Stop/Revoke.
const section = document.querySelector('section.session');

function formatLeft(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
}

if (section) {
  let expiresAt = Number(section.dataset.expiresAt);
  const warnBefore = (section.dataset.warnBefore || '').split(',').filter(Boolean).map(Number);
  const out = section.querySelector('.countdown');
  const warning = section.querySelector('.warning');
  const tick = () => {
    const s = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
    out.textContent = formatLeft(s);
    const point = warnBefore.filter((w) => s <= w).sort((a, b) => a - b)[0];
    if (warning && point !== undefined && s > 0) {
      warning.hidden = false;
      warning.textContent = `This desktop ends in ${formatLeft(s)}. Save your work${document.querySelector('form[action$="/extend"]') ? ', or extend it' : ''}.`;
    }
    if (s === 0) location.reload();
  };
  tick();
  setInterval(tick, 1000);
  const api = section.dataset.api;
  if (api) {
    setInterval(async () => {
      const res = await fetch(api, { cache: 'no-store' }).catch(() => null);
      if (!res) return;
      if (res.status === 410 || res.status === 404) return location.reload();
      const info = await res.json();
      // Waiting for a node: show where it is; once it runs, show the Connect button.
      if (section.dataset.state !== 'running' && info.state === 'running') return location.reload();
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
    }, section.dataset.state === 'running' ? 5000 : 2000);
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
