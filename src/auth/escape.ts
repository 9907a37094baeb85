// Escaping for LDAP: values in search filters (RFC 4515 §3) and in DNs
// (RFC 4514 §2.4). User names go through these before reaching the directory,
// so "*)(uid=*" is a literal string, not a filter.

export function escapeFilterValue(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    // RFC 4515: escape * ( ) \ NUL, and (to be safe) every non-printable or non-ASCII byte.
    if (byte < 0x20 || byte > 0x7e || ch === '*' || ch === '(' || ch === ')' || ch === '\\') {
      out += '\\' + byte.toString(16).padStart(2, '0');
    }
    else out += ch;
  }
  return out;
}

export function escapeDnValue(value: string): string {
  let out = value.replace(/[\\,+"<>;=]/g, (c) => '\\' + c).replace(/\0/g, '\\00');
  if (out.startsWith(' ') || out.startsWith('#')) out = '\\' + out;
  if (out.endsWith(' ')) out = out.slice(0, -1) + '\\ ';
  return out;
}

/** Replaces {user} in a template with the escaped value. */
export function fillTemplate(template: string, user: string, escape: (v: string) => string): string {
  return template.replaceAll('{user}', escape(user));
}
