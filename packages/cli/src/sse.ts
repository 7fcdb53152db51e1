/**
 * A minimal Server-Sent Events parser (the WHATWG event-stream format). It is small enough to own, and owning it
 * keeps the CLI's dependency list (and the workspace lock file) unchanged.
 */
export interface SseMessage {
  /** The `event:` field; `message` when absent, as EventSource does. */
  event: string;
  data: string;
  /** The `id:` field of this message, when it had one. */
  id: string | undefined;
}

export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private event = '';
  private id: string | undefined;
  private sawField = false;
  /** A chunk may end between `\r` and `\n`; remember it so the `\n` does not produce an empty line. */
  private lastWasCr = false;

  constructor(private readonly onMessage: (m: SseMessage) => void) {}

  feed(chunk: string): void {
    let text = chunk;
    if (this.lastWasCr && text.startsWith('\n')) text = text.slice(1);
    this.lastWasCr = text.endsWith('\r');
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    // The last piece is an incomplete line (or '' after a terminator); keep it for the next chunk.
    this.buffer = lines.pop() ?? '';
    for (const line of lines) this.line(line);
  }

  /** Drops a partly received message, as a client must when the connection ends mid-event. */
  reset(): void {
    this.buffer = '';
    this.data = [];
    this.event = '';
    this.id = undefined;
    this.sawField = false;
    this.lastWasCr = false;
  }

  private line(line: string): void {
    if (line === '') {
      if (this.sawField && this.data.length > 0) {
        this.onMessage({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.data = [];
      this.event = '';
      this.id = undefined;
      this.sawField = false;
      return;
    }
    if (line.startsWith(':')) return; // comment, e.g. a heartbeat
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    this.sawField = true;
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}
