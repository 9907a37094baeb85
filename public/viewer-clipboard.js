// The viewer's clipboard: automatic both ways where the browser allows it
// (the async Clipboard API, on a secure origin or localhost), and a text panel
// that always works. The page says which ways are allowed (data-clipboard:
// both | to-guest | from-guest | off); the bridge enforces the same policy,
// so this only keeps the page from offering what would be dropped anyway.

/**
 * @param {{ policy: string, viewOnly: boolean, text: HTMLTextAreaElement | null,
 *   send: HTMLButtonElement | null, note: HTMLElement | null }} opts
 */
export function createClipboard(opts) {
  const toGuest = !opts.viewOnly && (opts.policy === 'both' || opts.policy === 'to-guest');
  const fromGuest = opts.policy === 'both' || opts.policy === 'from-guest';
  const canRead = toGuest && window.isSecureContext && typeof navigator.clipboard?.readText === 'function';
  const canWrite = fromGuest && window.isSecureContext && typeof navigator.clipboard?.writeText === 'function';
  let rfb = null;
  /** The last text that went either way: the same text is not sent back where it came from. */
  let lastText = null;

  function say(text) {
    if (opts.note) opts.note.textContent = text;
  }

  function paste(text, force = false) {
    if (!toGuest || !rfb || typeof text !== 'string' || text === '') return false;
    if (!force && text === lastText) return false;
    lastText = text;
    rfb.clipboardPasteFrom(text);
    return true;
  }

  /** The browser's clipboard, read when the page gets the focus back (the user may have copied something elsewhere). */
  async function readBrowserClipboard() {
    if (!canRead || !rfb || !document.hasFocus()) return;
    try {
      const state = (await navigator.permissions?.query({ name: 'clipboard-read' }).catch(() => null))?.state;
      if (state === 'denied') return;
      if (paste(await navigator.clipboard.readText())) say('Your clipboard was passed to the desktop.');
    } catch {
      // Not allowed now (no permission, the page lost the focus): the panel is the way then.
    }
  }

  function onGuestClipboard(event) {
    if (!fromGuest) return;
    const text = event.detail.text;
    lastText = text;
    if (opts.text) opts.text.value = text;
    if (!canWrite) {
      say('Copied in the desktop: shown above.');
      return;
    }
    navigator.clipboard.writeText(text).then(
      () => say('Copied in the desktop: also in your clipboard.'),
      () => say('Copied in the desktop: shown above (this browser did not let the page use your clipboard).'),
    );
  }

  opts.send?.addEventListener('click', () => {
    if (paste(opts.text?.value ?? '', true)) say('Sent: paste it in the desktop (Ctrl+V there).');
    else say(rfb ? 'Nothing to send.' : 'Not connected.');
  });

  // A paste into the page (not into the panel's own text box) goes to the desktop.
  document.addEventListener('paste', (event) => {
    if (event.target === opts.text || !toGuest) return;
    const text = event.clipboardData?.getData('text/plain');
    if (text) {
      event.preventDefault();
      if (paste(text, true)) say('Pasted text was passed to the desktop.');
    }
  });
  window.addEventListener('focus', readBrowserClipboard);

  return {
    toGuest,
    fromGuest,
    setRfb(next) {
      rfb = next;
      if (!rfb) return;
      rfb.addEventListener('clipboard', onGuestClipboard);
      rfb.addEventListener('connect', readBrowserClipboard);
    },
  };
}
