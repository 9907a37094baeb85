// A real Chromium for end-to-end tests: Debian's /usr/bin/chromium driven by
// playwright-core (never a downloaded browser), one fresh profile per launch,
// closed in teardown. Also collects what the pages report as failures.
import fs from 'node:fs';
import type { ExecutionContext } from 'ava';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { tempDir } from './env.js';

export const CHROMIUM = '/usr/bin/chromium';

/** Fails (throws) with an install hint when Debian's Chromium is missing — never a skip. */
export function requireChromium(): string {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
  } catch (err) {
    throw new Error(`${CHROMIUM} is not installed: install the Debian package "chromium" (bin/setup does this)`, { cause: err });
  }
  return CHROMIUM;
}

export interface PageProblems {
  /** Uncaught exceptions and unhandled rejections in any page ('pageerror'). */
  errors: string[];
  /** console.error() lines, and Chromium's own "Failed to load resource" reports. */
  consoleErrors: string[];
  /** Responses with an HTTP error status, as "status method URL" (the console does not name the URL). */
  httpErrors: string[];
}

export interface TestBrowser {
  context: BrowserContext;
  problems: PageProblems;
}

/** The screen a test browser pretends to be: a 390×844 phone is `{ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true }`. */
export interface ChromiumDevice {
  viewport?: { width: number; height: number };
  isMobile?: boolean;
  hasTouch?: boolean;
}

/**
 * Launches Chromium with a fresh profile in a temp dir; closes it in teardown.
 * Every page the context opens (popups included) reports into `problems`.
 */
export async function launchChromium(t: ExecutionContext, device: ChromiumDevice = {}): Promise<TestBrowser> {
  requireChromium();
  // Registered before the close below: ava runs teardowns last-in first-out,
  // so the browser is gone before its profile is removed.
  const profile = tempDir(t, 'qwd-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    // Root needs --no-sandbox; the rest keeps Chromium off the network and
    // quiet. Playwright sets --user-data-dir itself from `profile`.
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: device.viewport ?? { width: 1024, height: 700 },
    isMobile: device.isMobile ?? false,
    hasTouch: device.hasTouch ?? false,
  });
  t.teardown(() => context.close());
  const problems: PageProblems = { errors: [], consoleErrors: [], httpErrors: [] };
  const watch = (page: Page) => {
    page.on('pageerror', (err) => problems.errors.push(`${page.url()}: ${err.stack ?? err.message}`));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const source = msg.location().url;
      problems.consoleErrors.push(`${page.url()}: ${msg.text()}${source ? ` (${source})` : ''}`);
    });
    page.on('response', (res) => {
      if (res.status() >= 400) problems.httpErrors.push(`${res.status()} ${res.request().method()} ${res.url()}`);
    });
  };
  for (const page of context.pages()) watch(page);
  context.on('page', watch);
  return { context, problems };
}
