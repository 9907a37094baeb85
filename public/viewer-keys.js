// The viewer's keys: the toolbar's special keys (Esc, Tab, arrows, F-keys,
// Ctrl+Alt+Del), sticky modifiers (Ctrl, Alt, Super held for the next key),
// and the on-screen keyboard for touch devices. Not the physical keyboard on
// the canvas: noVNC's own Keyboard handles that. Owns the sticky-key state of
// the current connection; setRfb() hands it each new connection.
import KeyTable from '/novnc/core/input/keysym.js';
import keysyms from '/novnc/core/input/keysymdef.js';

/** Named keys: [keysym, KeyboardEvent.code]. The code lets noVNC send QEMU's extended key event (a scancode). */
const NAMED_KEYS = {
  Escape: [KeyTable.XK_Escape, 'Escape'],
  Tab: [KeyTable.XK_Tab, 'Tab'],
  Enter: [KeyTable.XK_Return, 'Enter'],
  Backspace: [KeyTable.XK_BackSpace, 'Backspace'],
  Delete: [KeyTable.XK_Delete, 'Delete'],
  Insert: [KeyTable.XK_Insert, 'Insert'],
  Home: [KeyTable.XK_Home, 'Home'],
  End: [KeyTable.XK_End, 'End'],
  PageUp: [KeyTable.XK_Prior, 'PageUp'],
  PageDown: [KeyTable.XK_Next, 'PageDown'],
  ArrowLeft: [KeyTable.XK_Left, 'ArrowLeft'],
  ArrowUp: [KeyTable.XK_Up, 'ArrowUp'],
  ArrowRight: [KeyTable.XK_Right, 'ArrowRight'],
  ArrowDown: [KeyTable.XK_Down, 'ArrowDown'],
};
for (let i = 1; i <= 12; i++) NAMED_KEYS[`F${i}`] = [KeyTable.XK_F1 + i - 1, `F${i}`];

const STICKY_KEYS = {
  Control: [KeyTable.XK_Control_L, 'ControlLeft'],
  Alt: [KeyTable.XK_Alt_L, 'AltLeft'],
  Super: [KeyTable.XK_Super_L, 'MetaLeft'],
};

/** Keys that modify the next one: pressing them does not release the sticky modifiers. */
const MODIFIER_KEYSYMS = new Set([
  KeyTable.XK_Shift_L, KeyTable.XK_Shift_R, KeyTable.XK_Control_L, KeyTable.XK_Control_R,
  KeyTable.XK_Alt_L, KeyTable.XK_Alt_R, KeyTable.XK_Meta_L, KeyTable.XK_Meta_R,
  KeyTable.XK_Super_L, KeyTable.XK_Super_R, KeyTable.XK_ISO_Level3_Shift, KeyTable.XK_Caps_Lock, KeyTable.XK_Num_Lock,
]);

/**
 * Characters typed with Shift on the US layout QEMU's VNC server maps keysyms
 * with by default: a plain KeyEvent with the keysym of "A" alone may reach the
 * guest as "a", so the on-screen keyboard holds Shift around these.
 */
const SHIFTED = /^[A-Z~!@#$%^&*()_+{}|:"<>?]$/;

/**
 * What the on-screen keyboard's input holds between keys: something Backspace can delete (mobile keyboards
 * send no usable keydown, only the input's change).
 */
const FILLER = '__________';

/**
 * @param {{ keysPanel: HTMLElement | null, oskButton: HTMLElement | null, oskInput: HTMLInputElement | null }} els
 */
export function createKeys(els) {
  let rfb = null;
  /** Sticky modifiers currently held down in the guest: name → button. */
  const held = new Map();
  const stickyButtons = [...(els.keysPanel?.querySelectorAll('[data-sticky]') ?? [])];

  function releaseSticky(send) {
    for (const [name, button] of held) {
      const [keysym, code] = STICKY_KEYS[name];
      send(keysym, code, false);
      button.setAttribute('aria-pressed', 'false');
    }
    held.clear();
  }

  function setRfb(next) {
    // A new connection starts with nothing held (QEMU releases a viewer's keys when it goes).
    for (const button of stickyButtons) button.setAttribute('aria-pressed', 'false');
    held.clear();
    rfb = next;
    if (!rfb) return;
    // Every key the guest gets goes through sendKey (noVNC's Keyboard, the toolbar, the on-screen keyboard):
    // the sticky modifiers are let go after the first other key is released.
    const send = rfb.sendKey.bind(rfb);
    rfb.sendKey = (keysym, code, down) => {
      send(keysym, code, down);
      if (down === false && held.size > 0 && !MODIFIER_KEYSYMS.has(keysym)) releaseSticky(send);
    };
  }

  function sendNamed(name) {
    const key = NAMED_KEYS[name];
    if (rfb && key) rfb.sendKey(key[0], key[1]);
  }

  function sendText(text) {
    if (!rfb) return;
    for (const ch of text) {
      if (ch === '\n' || ch === '\r') {
        sendNamed('Enter');
      } else if (SHIFTED.test(ch)) {
        rfb.sendKey(KeyTable.XK_Shift_L, 'ShiftLeft', true);
        rfb.sendKey(keysyms.lookup(ch.codePointAt(0)), undefined);
        rfb.sendKey(KeyTable.XK_Shift_L, 'ShiftLeft', false);
      } else {
        rfb.sendKey(keysyms.lookup(ch.codePointAt(0)), undefined);
      }
    }
  }

  function toggleSticky(button) {
    if (!rfb) return;
    const name = button.dataset.sticky;
    const [keysym, code] = STICKY_KEYS[name];
    if (held.has(name)) {
      held.delete(name);
      rfb.sendKey(keysym, code, false);
      button.setAttribute('aria-pressed', 'false');
    } else {
      rfb.sendKey(keysym, code, true);
      held.set(name, button);
      button.setAttribute('aria-pressed', 'true');
    }
  }

  if (els.keysPanel) {
    els.keysPanel.addEventListener('click', (event) => {
      const button = event.target.closest('button');
      if (!button || !rfb) return;
      if (button.dataset.sticky) toggleSticky(button);
      else if (button.dataset.key) sendNamed(button.dataset.key);
      else if (button.id === 'ctrl-alt-del') rfb.sendCtrlAltDel();
    });
    // Keep the focus where it is (the desktop, or the on-screen keyboard, which would close) when a key is tapped.
    els.keysPanel.addEventListener('mousedown', (event) => {
      if (event.target.closest('button')) event.preventDefault();
    });
  }

  // The on-screen keyboard: a visually hidden input whose focus raises the
  // device's keyboard. What is typed is read from the input's value (`input`
  // events), as mobile keyboards send keydown with key "Unidentified"; while an
  // IME composes, nothing is sent until the composition ends.
  const input = els.oskInput;
  let sent = FILLER;
  let composing = false;

  function resetInput() {
    input.value = FILLER;
    sent = FILLER;
    input.setSelectionRange(FILLER.length, FILLER.length);
  }

  /** Sends the difference between what was sent and what the input holds now: Backspaces, then the new text. */
  function flush() {
    const now = input.value;
    const before = [...sent];
    const after = [...now];
    let same = 0;
    while (same < before.length && same < after.length && before[same] === after[same]) same++;
    if (rfb) {
      for (let i = same; i < before.length; i++) sendNamed('Backspace');
      sendText(after.slice(same).join(''));
    }
    sent = now;
    if (!composing && (after.length === 0 || after.length > 4 * FILLER.length)) resetInput();
  }

  if (input) {
    resetInput();
    input.addEventListener('compositionstart', () => { composing = true; });
    input.addEventListener('compositionend', () => { composing = false; flush(); });
    input.addEventListener('input', (event) => {
      if (!composing && !event.isComposing) flush();
    });
    input.addEventListener('keydown', (event) => {
      // A keyboard that says which key it is (a hardware keyboard, and Enter/Backspace on most mobile ones).
      if (event.isComposing || event.keyCode === 229) return;
      if (NAMED_KEYS[event.key]) {
        event.preventDefault();
        flush();
        sendNamed(event.key);
      } else if ((event.ctrlKey || event.altKey || event.metaKey) && event.key.length === 1 && rfb) {
        // Shortcuts typed on a hardware keyboard while the input has focus: as the guest would get them.
        event.preventDefault();
        const mods = [
          event.ctrlKey && STICKY_KEYS.Control, event.altKey && STICKY_KEYS.Alt, event.metaKey && STICKY_KEYS.Super,
        ].filter(Boolean);
        for (const [keysym, code] of mods) rfb.sendKey(keysym, code, true);
        rfb.sendKey(keysyms.lookup(event.key.codePointAt(0)), undefined);
        for (const [keysym, code] of mods.reverse()) rfb.sendKey(keysym, code, false);
      }
    });
    input.addEventListener('focus', () => {
      els.oskButton?.setAttribute('aria-pressed', 'true');
      resetInput();
      // A tap on the desktop must not take the focus (and the keyboard) away while typing.
      if (rfb) rfb.focusOnClick = false;
    });
    input.addEventListener('blur', () => {
      els.oskButton?.setAttribute('aria-pressed', 'false');
      flush();
      if (rfb) rfb.focusOnClick = true;
    });
  }

  if (els.oskButton && input) {
    const touch = navigator.maxTouchPoints > 0 || window.matchMedia('(pointer: coarse)').matches;
    els.oskButton.hidden = !touch;
    els.oskButton.setAttribute('aria-pressed', 'false');
    els.oskButton.addEventListener('click', () => {
      if (document.activeElement === input) input.blur();
      else input.focus({ preventScroll: true });
    });
  }

  return {
    setRfb,
    /** Is the on-screen keyboard up (its input focused)? */
    get typing() { return !!input && document.activeElement === input; },
  };
}
