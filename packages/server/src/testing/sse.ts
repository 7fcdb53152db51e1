/** A minimal SSE reader for tests: collects events from a watch stream. */
export interface SseEvent {
  id: string | undefined;
  event: string;
  data: any;
}

export class SseClient {
  readonly events: SseEvent[] = [];
  private waiters: (() => void)[] = [];
  private controller = new AbortController();
  status = 0;
  ended = false;
  done: Promise<void>;

  constructor(url: string, token: string, headers: Record<string, string> = {}) {
    this.done = this.run(url, token, headers).catch(() => {}).finally(() => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async run(url: string, token: string, headers: Record<string, string>): Promise<void> {
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, ...headers }, signal: this.controller.signal });
    this.status = res.status;
    if (!res.body || res.status !== 200) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let id: string | undefined;
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
          if (field === 'id') id = value;
          else if (field === 'event') event = value;
          else if (field === 'data') data.push(value);
        }
        if (data.length === 0 && event === 'message') continue;
        const text = data.join('\n');
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // keep text
        }
        this.events.push({ id, event, data: parsed });
        this.wake();
      }
    }
  }

  /** Changes only (no BOOKMARK). */
  changes(): SseEvent[] {
    return this.events.filter((e) => e.event === 'ADDED' || e.event === 'MODIFIED' || e.event === 'DELETED');
  }

  async waitFor(pred: (events: SseEvent[]) => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (this.ended && !pred(this.events)) throw new Error(`stream ended before the condition held; got ${JSON.stringify(this.events.map((e) => [e.event, e.id]))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${JSON.stringify(this.events.map((e) => [e.event, e.id]))}`);
      await new Promise<void>((ok) => {
        const t = setTimeout(ok, left);
        this.waiters.push(() => {
          clearTimeout(t);
          ok();
        });
      });
    }
  }

  close(): void {
    this.controller.abort();
  }
}
