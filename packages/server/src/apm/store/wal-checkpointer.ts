import { Worker } from 'node:worker_threads';

export type CheckpointRequest = 'checkpoint' | 'close';
export type CheckpointReply = { type: 'ready' } | { type: 'done'; log: number; checkpointed: number } | { type: 'failed'; message: string };

export interface WalCheckpointerOptions {
  /** WAL frames (pages) after which a checkpoint is asked for. Default 8000 (32 MiB of 4 KiB pages). */
  targetFrames?: number | undefined;
  /**
   * A checkpoint failed (`lost` false: the next one is tried as usual), or the thread failed or exited
   * unasked (`lost` true, once: the checkpointer does nothing after it).
   */
  onError?: ((err: Error, lost: boolean) => void) | undefined;
}

const DEFAULT_TARGET_FRAMES = 8000;

/**
 * Checkpoints a WAL-mode SQLite file from a worker thread, for the one writer of this process. SQLite's
 * automatic checkpoint runs inside the writer's commit, on the event loop: copying the WAL back and its
 * two fsyncs stalled ingest for tens of ms every few batches (the server sat at ~85 % of its core).
 *
 * The writer tells it how many spans each commit wrote (`written`); frames per span are learnt from the
 * previous checkpoint's WAL size. While a checkpoint runs, the writer waits on `idle` before its next
 * commit: with no frame appended meanwhile the checkpoint completes, and the next commit restarts the
 * WAL from its start instead of growing it. Durability is the writer's (WAL, synchronous=NORMAL): the
 * checkpoint syncs as SQLite's own would.
 */
export class WalCheckpointer {
  private readonly targetFrames: number;
  private readonly onError: ((err: Error, lost: boolean) => void) | undefined;
  private waiting: { resolve: () => void } | undefined;
  private running: Promise<void> | undefined;
  /** Spans committed since the running (or last) checkpoint was asked for. */
  private spans = 0;
  private pendingSpans = 0;
  private framesPerSpan = 1;
  private lastLog: number | undefined;
  private lost = false;
  private closing = false;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly worker: Worker,
    options: WalCheckpointerOptions,
  ) {
    this.targetFrames = options.targetFrames ?? DEFAULT_TARGET_FRAMES;
    this.onError = options.onError;
    worker.on('message', (m: CheckpointReply) => this.reply(m));
    worker.on('error', (e) => this.lose(e));
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    void this.exited.then(() => this.lose(new Error('the WAL checkpoint thread exited')));
  }

  /** Starts the thread and opens its connection to `path` (which must exist, in WAL mode). */
  static start(path: string, options: WalCheckpointerOptions = {}): Promise<WalCheckpointer> {
    const worker = new Worker(new URL('./wal-checkpoint-worker.js', import.meta.url), { workerData: { path } });
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => {
        worker.off('message', first);
        void worker.terminate();
        reject(e);
      };
      const first = (m: CheckpointReply) => {
        worker.off('error', fail);
        worker.off('message', first);
        if (m.type !== 'ready') return fail(new Error(m.type === 'failed' ? m.message : 'unexpected first message'));
        // Idle, it must not keep the process alive; a running checkpoint refs it (`run`).
        worker.unref();
        resolve(new WalCheckpointer(worker, options));
      };
      worker.on('message', first);
      worker.once('error', fail);
    });
  }

  /** False once the thread is gone: the writer should then checkpoint itself again. */
  get alive(): boolean {
    return !this.lost;
  }

  /** Settles when no checkpoint runs; the writer awaits it (when set) before a commit. */
  get idle(): Promise<void> | undefined {
    return this.running;
  }

  /** The writer committed `spans` spans; starts a checkpoint once the WAL is estimated at the target. */
  written(spans: number): void {
    this.spans += spans;
    if (this.running || this.lost || this.closing || this.spans * this.framesPerSpan < this.targetFrames) return;
    void this.run();
  }

  /** One checkpoint now (tests, and `written`). Resolves when it is done or the thread is lost. */
  run(): Promise<void> {
    if (this.running) return this.running;
    if (this.lost) return Promise.resolve();
    this.pendingSpans = this.spans;
    this.spans = 0;
    this.worker.ref();
    this.running = new Promise<void>((resolve) => {
      this.waiting = { resolve };
      this.worker.postMessage('checkpoint' satisfies CheckpointRequest);
    }).finally(() => {
      this.running = undefined;
      if (!this.lost) this.worker.unref();
    });
    return this.running;
  }

  /** Waits for a running checkpoint, then closes the thread's connection and lets the thread end. */
  async close(): Promise<void> {
    if (this.closing) return this.exited;
    this.closing = true;
    await this.running;
    if (!this.lost) {
      this.worker.ref();
      this.worker.postMessage('close' satisfies CheckpointRequest);
    }
    await this.exited;
  }

  private reply(m: CheckpointReply): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (m.type === 'done') {
      // The WAL held `log` frames for the spans written since the previous checkpoint (it restarts after a
      // complete one); bounded, so that one odd reading cannot stop or flood checkpoints.
      if (this.pendingSpans > 0 && m.log > 0) this.framesPerSpan = Math.min(64, Math.max(1 / 64, m.log / this.pendingSpans));
      this.lastLog = m.log;
      w?.resolve();
    } else if (m.type === 'failed') {
      this.onError?.(new Error(`WAL checkpoint failed: ${m.message}`), false);
      w?.resolve();
    }
  }

  /** Frames in the WAL at the last checkpoint (tests). */
  get lastWalFrames(): number | undefined {
    return this.lastLog;
  }

  private lose(err: Error): void {
    if (this.lost) return;
    this.lost = true;
    this.waiting?.resolve();
    this.waiting = undefined;
    if (!this.closing) {
      void this.worker.terminate();
      this.onError?.(err, true);
    }
  }
}
