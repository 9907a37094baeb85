// The demo guest's screen as a test reads it, through the viewer page in a
// real Chromium: noVNC's canvas as a 1-bit "lit" map, the VGA text console as
// a grid of glyph cells, and waits on the screen, the status line and the
// guest's serial console. Shared by the browser tests of the viewer.
/// <reference lib="dom" />
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Page } from 'playwright-core';
import type { PageProblems } from './chromium.js';
import { ROOT, waitFor } from './env.js';

export const ARTIFACTS = path.join(ROOT, 'test-artifacts');
export const TOKEN_PATH = /\/s\/([A-Za-z0-9_-]{43})$/;
/** One 9×16 text cell: the most a blinking cursor can change on the VGA text screen. */
export const CELL_PX = 9 * 16;

/** The viewer canvas as a 1-bit "lit" map (any non-black pixel), small enough to ship out of the page. */
export interface Screen {
  width: number;
  height: number;
  lit: number;
  bits: Buffer;
}

export async function readScreen(page: Page): Promise<Screen | null> {
  // No named functions inside: tsx would wrap them in a __name() helper the page does not have.
  const raw = await page.evaluate(() => {
    const canvas = document.querySelector('#screen canvas');
    if (!(canvas instanceof HTMLCanvasElement) || canvas.width === 0 || canvas.height === 0) return null;
    const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    const bytes = new Uint8Array(Math.ceil(data.length / 32));
    let lit = 0;
    for (let i = 0, p = 0; i < data.length; i += 4, p++) {
      if (data[i]! | data[i + 1]! | data[i + 2]!) {
        lit++;
        bytes[p >> 3]! |= 1 << (p & 7);
      }
    }
    let binary = '';
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { width: canvas.width, height: canvas.height, lit, bits: btoa(binary) };
  });
  return raw && { ...raw, bits: Buffer.from(raw.bits, 'base64') };
}

/** How many pixels went from lit to dark or back between two screens of the same size. */
export function changedPixels(a: Screen, b: Screen): number {
  if (a.width !== b.width || a.height !== b.height) return a.width * a.height;
  let n = 0;
  for (let i = 0; i < a.bits.length; i++) {
    let x = a.bits[i]! ^ b.bits[i]!;
    for (; x; x &= x - 1) n++;
  }
  return n;
}

/**
 * The screen as a grid of text cells, each cell's lit pattern as a string
 * ('' for a blank cell). The demo guest draws on the VGA text console:
 * 720×400, 80×25 cells of 9×16 pixels.
 */
export function textCells(screen: Screen): string[][] {
  const cellW = 9, cellH = 16;
  if (screen.width !== 80 * cellW || screen.height !== 25 * cellH) throw new Error(`expected the guest's 720×400 VGA text console, got a ${screen.width}×${screen.height} screen`);
  const grid: string[][] = [];
  for (let row = 0; row < 25; row++) {
    const cells: string[] = [];
    for (let col = 0; col < 80; col++) {
      let pattern = '';
      let any = false;
      for (let y = row * cellH; y < (row + 1) * cellH; y++) {
        for (let x = col * cellW; x < (col + 1) * cellW; x++) {
          const p = y * screen.width + x;
          const bit = (screen.bits[p >> 3]! >> (p & 7)) & 1;
          pattern += bit;
          if (bit) any = true;
        }
      }
      cells.push(any ? pattern : '');
    }
    grid.push(cells);
  }
  return grid;
}

/**
 * Finds the typed command `echo qwd` on one text row and its output `qwd`
 * alone at the start of the next: the shell ran what was typed. No font is
 * needed: the seven letters must be seven different glyphs, and the three
 * output cells must be the very glyphs of the command's last three letters.
 */
export function findEchoedCommand(screen: Screen): { row: number; col: number } | null {
  return findEchoedCommands(screen)[0] ?? null;
}

/** Every place `echo qwd` and its output `qwd` show (see findEchoedCommand): one more each time the command runs. */
export function findEchoedCommands(screen: Screen): { row: number; col: number }[] {
  const grid = textCells(screen);
  const found: { row: number; col: number }[] = [];
  for (let row = 0; row + 1 < grid.length; row++) {
    const line = grid[row]!;
    const next = grid[row + 1]!;
    for (let col = 1; col + 8 <= line.length; col++) {
      const [e, c, h, o, space, q, w, d] = line.slice(col, col + 8) as [string, string, string, string, string, string, string, string];
      const letters = [e, c, h, o, q, w, d];
      if (line[col - 1] !== '' || space !== '' || letters.includes('') || new Set(letters).size !== 7) continue;
      if (next[0] === q && next[1] === w && next[2] === d && next.slice(3).every((cell) => cell === '')) found.push({ row, col });
    }
  }
  return found;
}

/** Waits for a line in the guest's serial console (QEMU writes it to serial.log in the session's run dir). */
export async function waitForSerialLine(runDir: string, line: string, timeoutMs: number): Promise<void> {
  const file = path.join(runDir, 'serial.log');
  let text = '';
  try {
    await waitFor(`"${line}" on the guest's serial console`, () => {
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        // QEMU creates the file when it starts; until then there is nothing to read.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      return text.split(/\r?\n/).some((l) => l.trim() === line);
    }, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}; ${file} ends with: ${JSON.stringify(text.slice(-600))}`, { cause: err });
  }
}

/** Polls the page's canvas until `accept` holds; on timeout says what the screen looked like last. */
export async function waitForScreen(page: Page, what: string, accept: (s: Screen) => boolean, timeoutMs: number, beforeEach?: () => Promise<void>): Promise<Screen> {
  let last: Screen | null = null;
  try {
    return await waitFor(what, async () => {
      await beforeEach?.();
      last = await readScreen(page);
      return last && accept(last) ? last : false;
    }, timeoutMs);
  } catch (err) {
    const seen = last as Screen | null;
    throw new Error(`${(err as Error).message} (last screen: ${seen ? `${seen.width}×${seen.height}, ${seen.lit} lit pixels` : 'no canvas'})`, { cause: err });
  }
}

/** Waits until the screen stays put (nothing but a blinking cursor) for `quietMs`. */
export async function waitForQuietScreen(page: Page, quietMs: number, timeoutMs: number): Promise<Screen> {
  let since: { screen: Screen; at: number } | null = null;
  return waitFor(`the guest screen to stay unchanged for ${quietMs} ms`, async () => {
    const now = await readScreen(page);
    if (!now) return false;
    if (!since || changedPixels(since.screen, now) > CELL_PX) since = { screen: now, at: Date.now() };
    return Date.now() - since.at >= quietMs ? now : false;
  }, timeoutMs);
}

export async function waitForStatus(page: Page, prefix: string, timeoutMs: number): Promise<string> {
  let last: string | null = null;
  try {
    return await waitFor(`#status to start with "${prefix}"`, async () => {
      last = await page.locator('#status').textContent();
      return last?.startsWith(prefix) ? last : false;
    }, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}; it says ${JSON.stringify(last)}`, { cause: err });
  }
}

/** Clicks a target=_blank link and returns the tab it opened, loaded. */
export async function openInNewTab(page: Page, selector: string): Promise<Page> {
  const [tab] = await Promise.all([page.context().waitForEvent('page', { timeout: 15000 }), page.click(selector)]);
  await tab.waitForLoadState('load');
  return tab;
}

export async function saveScreenshot(page: Page, name: string, t: ExecutionContext): Promise<string> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  t.log(`screenshot: ${path.relative(ROOT, file)}`);
  return file;
}

export function assertNoPageProblems(t: ExecutionContext, who: string, problems: PageProblems): void {
  t.deepEqual(problems.errors, [], `${who}: uncaught errors in pages`);
  t.deepEqual(problems.httpErrors, [], `${who}: failed requests from pages`);
  t.deepEqual(problems.consoleErrors, [], `${who}: console errors in pages`);
}

/** RFB client messages (RFC 6143 §7.5, plus QEMU's extended key event) the viewer sent, in order. */
export interface SentMessage {
  type: 'key' | 'qemu-key' | 'pointer' | 'cut-text' | 'clipboard-caps' | 'clipboard-request' | 'set-desktop-size' | 'other';
  down?: boolean;
  keysym?: number;
  buttons?: number;
  x?: number;
  y?: number;
}

/** Splits one WebSocket frame of client messages; anything it cannot size ends the frame as 'other'. */
export function parseClientMessages(frame: Buffer): SentMessage[] {
  const out: SentMessage[] = [];
  let at = 0;
  while (at < frame.length) {
    const type = frame[at]!;
    if (type === 4 && at + 8 <= frame.length) {
      out.push({ type: 'key', down: frame[at + 1] === 1, keysym: frame.readUInt32BE(at + 4) });
      at += 8;
    } else if (type === 5 && at + 6 <= frame.length) {
      out.push({ type: 'pointer', buttons: frame[at + 1]!, x: frame.readUInt16BE(at + 2), y: frame.readUInt16BE(at + 4) });
      at += 6;
    } else if (type === 255 && frame[at + 1] === 0 && at + 12 <= frame.length) {
      out.push({ type: 'qemu-key', down: frame.readUInt16BE(at + 2) === 1, keysym: frame.readUInt32BE(at + 4) });
      at += 12;
    } else if (type === 6 && at + 8 <= frame.length) {
      // A negative length is the extended clipboard (0xC0A1E5CE): its first flags bit 24 marks the
      // capabilities a client announces once the server offers it, which carry no text.
      // Bits 25 and 26 (request, peek) ask for the server's text and carry none of the viewer's.
      const length = frame.readInt32BE(at + 4);
      const flags = length < 0 && at + 12 <= frame.length ? frame.readUInt32BE(at + 8) : 0;
      const asks = (flags & 0x06000000) !== 0 && (flags & 0x18000000) === 0;
      out.push({ type: flags & 0x01000000 ? 'clipboard-caps' : asks ? 'clipboard-request' : 'cut-text' });
      at += 8 + Math.abs(length);
    } else if (type === 0 && at + 20 <= frame.length) {
      at += 20; // SetPixelFormat
    } else if (type === 2 && at + 4 <= frame.length) {
      at += 4 + 4 * frame.readUInt16BE(at + 2); // SetEncodings
    } else if (type === 251 && at + 8 <= frame.length) {
      out.push({ type: 'set-desktop-size', x: frame.readUInt16BE(at + 2), y: frame.readUInt16BE(at + 4) });
      at += 8 + 16 * frame[at + 6]!;
    } else if (type === 3 && at + 10 <= frame.length) {
      at += 10; // FramebufferUpdateRequest: the viewer asking for pictures, not input
    } else {
      out.push({ type: 'other' });
      break;
    }
  }
  return out;
}

/** Records every client message the page sends on its RFB WebSockets from now on. */
export function recordSent(page: Page): SentMessage[] {
  const sent: SentMessage[] = [];
  page.on('websocket', (ws) => {
    if (!ws.url().includes('/ws/')) return;
    ws.on('framesent', (frame) => {
      if (typeof frame.payload !== 'string') sent.push(...parseClientMessages(frame.payload));
    });
  });
  return sent;
}
