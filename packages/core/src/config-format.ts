import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { ConfigFormat } from './kinds/config.js';

export class ConfigFormatError extends Error {
  constructor(
    message: string,
    readonly line?: number,
  ) {
    super(message);
    this.name = 'ConfigFormatError';
  }
}

/**
 * Java-style .properties: `key=value`, `key: value` or `key value`; `#`/`!` comments; a trailing backslash
 * continues a line; \t \n \r \f \uXXXX escapes.
 */
export function parseProperties(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split(/\r\n|\r|\n/);
  for (let i = 0; i < lines.length; i++) {
    const startLine = i + 1;
    let logical = lines[i]!.replace(/^[ \t\f]+/, '');
    if (logical === '' || logical.startsWith('#') || logical.startsWith('!')) continue;
    while (/(^|[^\\])(\\\\)*\\$/.test(logical)) {
      logical = logical.slice(0, -1);
      i++;
      if (i >= lines.length) break;
      logical += lines[i]!.replace(/^[ \t\f]+/, '');
    }
    let k = 0;
    let key = '';
    while (k < logical.length) {
      const c = logical[k]!;
      if (c === '\\') {
        key += logical.slice(k, k + 2);
        k += 2;
        continue;
      }
      if (c === '=' || c === ':' || c === ' ' || c === '\t' || c === '\f') break;
      key += c;
      k++;
    }
    let rest = logical.slice(k).replace(/^[ \t\f]*/, '');
    if (rest.startsWith('=') || rest.startsWith(':')) rest = rest.slice(1).replace(/^[ \t\f]*/, '');
    out[unescapeProperties(key, startLine)] = unescapeProperties(rest, startLine);
  }
  return out;
}

function unescapeProperties(s: string, line: number): string {
  return s.replace(/\\(u([0-9a-fA-F]{0,4})|.)/g, (m, c: string, hex: string | undefined) => {
    if (c.startsWith('u')) {
      if (hex === undefined || hex.length !== 4) throw new ConfigFormatError(`line ${line}: malformed \\u escape`, line);
      return String.fromCharCode(parseInt(hex, 16));
    }
    switch (c) {
      case 't':
        return '\t';
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 'f':
        return '\f';
      default:
        return m.length > 1 ? c : m;
    }
  });
}

/** Parses config content by its format; throws ConfigFormatError naming the line where it can. */
export function parseConfigContent(format: ConfigFormat, content: string): unknown {
  switch (format) {
    case 'text':
      return content;
    case 'json':
      try {
        return JSON.parse(content) as unknown;
      } catch (e) {
        throw new ConfigFormatError(`invalid JSON: ${(e as Error).message}`);
      }
    case 'yaml':
      try {
        return parseYaml(content, { maxAliasCount: 100 }) as unknown;
      } catch (e) {
        if (e instanceof YAMLParseError) {
          const line = e.linePos?.[0]?.line;
          throw new ConfigFormatError(`invalid YAML${line ? ` at line ${line}` : ''}: ${e.message.split('\n')[0]}`, line);
        }
        throw new ConfigFormatError(`invalid YAML: ${(e as Error).message}`);
      }
    case 'properties':
      return parseProperties(content);
  }
}
