// HTML escaping and the page layout shared by every server-rendered page.
// Pages work without JavaScript; scripts in public/ only add live updates.

export function esc(value: unknown): string {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/** Marks a string as already-safe HTML. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** Tagged template: interpolations are escaped unless they are Html (or arrays of Html). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return new Html(out);
}

function render(value: unknown): string {
  if (value instanceof Html) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === null || value === undefined || value === false) return '';
  return esc(value);
}

/** What every page needs to know about the visitor. */
export interface PageContext {
  csrf: string;
  identity: { user: string; admin: boolean } | null;
  /** No authentication configured (users type a name). */
  open: boolean;
}

export function csrfField(ctx: PageContext): Html {
  return html`<input type="hidden" name="_csrf" value="${ctx.csrf}">`;
}

function nav(ctx: PageContext | undefined): Html {
  if (!ctx) return html`<nav><a href="/">New desktop</a> <a href="/manage">My desktops</a></nav>`;
  if (ctx.identity) {
    const { user, admin } = ctx.identity;
    return html`<nav><a href="/">New desktop</a> <a href="/manage">${admin ? 'All desktops' : 'My desktops'}</a>
<span class="who">${user}${admin ? ' (admin)' : ''}</span>
<form method="post" action="/logout" class="inline">${csrfField(ctx)}\
<button type="submit" class="link">Log out</button></form></nav>`;
  }
  const login = ctx.open ? '' : html` <a href="/login">Log in</a>`;
  return html`<nav><a href="/">New desktop</a> <a href="/manage">My desktops</a>${login}</nav>`;
}

export function layout(
  title: string, body: Html, opts: { scripts?: string[]; bodyClass?: string; ctx?: PageContext } = {},
): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · qemu-web-desktop</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
${(opts.scripts ?? []).map((src) => html`<script type="module" src="${src}"></script>`)}
</head>
<body class="${opts.bodyClass ?? ''}">
<header class="top"><a class="brand" href="/">qemu-web-desktop</a>${nav(opts.ctx)}</header>
<main>
${body}
</main>
</body>
</html>
`.value;
}

export function formatDuration(seconds: number): string {
  if (seconds <= 0) return '0 min';
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.round((seconds % 3600) / 60);
  return [d ? `${d} d` : '', h ? `${h} h` : '', m ? `${m} min` : ''].filter(Boolean).join(' ') || `${seconds} s`;
}
