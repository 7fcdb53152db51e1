import { Backoff, type BackoffOptions } from '../backoff.js';
import { isControlPlaneError } from '../errors.js';
import { errorMessage, type Logger } from '../logger.js';
import { LEASE_NOT_FOUND, type InstanceSpecToRegister, type RegistryApi } from './registry-api.js';

/**
 * - idle: nothing sent yet (the service is not listening, or its snapshot is not held yet)
 * - registering: PUT attempts, with backoff, until one succeeds
 * - registered: renewing the lease
 * - draining: marked draining; renewals go on (the lease must outlive the drain), never re-registers
 * - stopped: deregistered, or given up; nothing more is sent
 */
export type RegistrationState = 'idle' | 'registering' | 'registered' | 'draining' | 'stopped';

export interface RegistrationOptions {
  api: RegistryApi;
  leaseTtlSeconds: number;
  /** Delays between failed registrations. Default 250 ms .. 15 s. */
  backoff?: BackoffOptions | undefined;
  /** Bound on the drain and delete calls of a shutdown, which must not hold a terminating process for long. */
  shutdownCallTimeoutMs?: number;
  logger: Logger;
  onRegistered(): void;
  onLeaseLost(): void;
  random?: () => number;
}

/**
 * An Instance's life at the registry, with ONE timer whatever the phase: the next registration attempt or
 * the next renewal. Every call to the server runs through one chain, so a drain never races a registration
 * and a delete never overtakes a renewal; a shutdown aborts the attempt in flight rather than wait on it.
 */
export class Registration {
  private phase: RegistrationState = 'idle';
  private spec: InstanceSpecToRegister | undefined;
  /** The spec of the last PUT that succeeded: a later one (a health change) is sent at the next renewal. */
  private sent: InstanceSpecToRegister | undefined;
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private attempt: AbortController | undefined;
  /** A PUT was sent: the Instance may exist even if the answer never came, so a shutdown deletes it. */
  private mayExist = false;
  private readonly registerBackoff: Backoff;
  private readonly renewBackoff: Backoff;
  private readonly periodMs: number;
  private readonly random: () => number;
  private readonly log: Logger;
  private readonly shutdownTimeoutMs: number;

  constructor(private readonly o: RegistrationOptions) {
    this.log = o.logger;
    this.random = o.random ?? Math.random;
    this.periodMs = (o.leaseTtlSeconds * 1000) / 3;
    this.registerBackoff = new Backoff(o.backoff, this.random);
    // A failed renewal is retried sooner than the next regular one, and never later.
    this.renewBackoff = new Backoff({ initialMs: Math.min(250, this.periodMs), maxMs: this.periodMs }, this.random);
    this.shutdownTimeoutMs = o.shutdownCallTimeoutMs ?? 3000;
  }

  get state(): RegistrationState {
    return this.phase;
  }

  get registered(): boolean {
    return this.phase === 'registered';
  }

  start(spec: InstanceSpecToRegister): void {
    if (this.phase !== 'idle') return;
    this.spec = spec;
    this.phase = 'registering';
    void this.run(() => this.register());
  }

  /**
   * A changed spec (its health): sent at once when registered, in place of the next renewal (a PUT revives
   * the lease too); a registration under way sends it next. A failed send is retried as a renewal is.
   * While draining or stopped it is not sent: a PUT would undo the drain.
   */
  update(spec: InstanceSpecToRegister): void {
    if (this.phase === 'draining' || this.phase === 'stopped') return;
    this.spec = spec;
    if (this.phase === 'registered') this.schedule(0, () => this.renew());
  }

  /** No more (re-)registration; marks the Instance draining if it may exist. Renewals continue until `stop`. */
  markDraining(): Promise<void> {
    if (this.phase === 'draining' || this.phase === 'stopped') return this.chain;
    const was = this.phase;
    this.phase = 'draining';
    if (was === 'idle') return this.chain;
    if (was === 'registering') this.clearTimer();
    // A registration or renewal hanging on an unreachable server must not delay the drain; a renewal
    // aborted here is rescheduled by itself, since the lease must outlive the drain.
    this.attempt?.abort();
    return this.run(async () => {
      if (!this.mayExist) return;
      try {
        const existed = await this.o.api.drain(AbortSignal.timeout(this.shutdownTimeoutMs));
        this.log.debug(existed ? 'instance marked draining' : 'nothing to drain: the instance is not registered', { instance: this.o.api.instance });
      } catch (e) {
        // Callers still stop seeing the instance once it is deleted or its lease lapses.
        this.log.warn('could not mark the instance draining', { instance: this.o.api.instance, error: errorMessage(e) });
      }
    });
  }

  /** Stops renewing and deletes the Instance. */
  stop(): Promise<void> {
    if (this.phase === 'stopped') return this.chain;
    this.phase = 'stopped';
    this.clearTimer();
    this.attempt?.abort();
    return this.run(async () => {
      if (!this.mayExist) return;
      try {
        await this.o.api.deregister(AbortSignal.timeout(this.shutdownTimeoutMs));
        this.log.debug('instance deregistered', { instance: this.o.api.instance });
      } catch (e) {
        this.log.warn('could not deregister the instance; its lease will lapse', { instance: this.o.api.instance, error: errorMessage(e) });
      }
    });
  }

  private is(state: RegistrationState): boolean {
    return this.phase === state;
  }

  private run(step: () => Promise<void>): Promise<void> {
    this.chain = this.chain.then(step).catch((e: unknown) => {
      // Each step handles its own failures; reaching this is a bug, reported rather than left unhandled.
      this.log.warn('registration step failed unexpectedly', { instance: this.o.api.instance, error: errorMessage(e) });
    });
    return this.chain;
  }

  private schedule(ms: number, step: () => Promise<void>): void {
    if (this.phase === 'stopped') return;
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run(step);
    }, ms);
    // The HTTP server (or the control-plane watch) keeps a service alive, not its lease.
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Every ttl/3, jittered down by up to a quarter so a fleet started together does not renew in step. */
  private renewDelay(): number {
    return Math.floor(this.periodMs * (0.75 + 0.25 * this.random()));
  }

  private async register(): Promise<void> {
    if (this.phase !== 'registering' || this.spec === undefined) return;
    const ctl = new AbortController();
    this.attempt = ctl;
    this.mayExist = true;
    const spec = this.spec;
    try {
      await this.o.api.register(spec, ctl.signal);
      this.sent = spec;
    } catch (e) {
      if (!this.is('registering')) return;
      const delay = this.registerBackoff.next();
      const n = this.registerBackoff.failures;
      const details = { instance: this.o.api.instance, error: errorMessage(e), failures: n, retryInMs: delay };
      // First failure, then every 10th: an outage is reported, not narrated.
      if (n === 1 || n % 10 === 0) this.log.warn('cannot register with the control plane; serving meanwhile and retrying', details);
      else this.log.debug('still cannot register with the control plane', details);
      this.schedule(delay, () => this.register());
      return;
    } finally {
      if (this.attempt === ctl) this.attempt = undefined;
    }
    if (!this.is('registering')) return;
    this.registerBackoff.reset();
    this.phase = 'registered';
    this.log.debug('instance registered', { instance: this.o.api.instance });
    this.o.onRegistered();
    // A spec changed while the PUT was under way goes at once.
    this.schedule(this.spec === this.sent ? this.renewDelay() : 0, () => this.renew());
  }

  private async renew(): Promise<void> {
    if (this.phase !== 'registered' && this.phase !== 'draining') return;
    const ctl = new AbortController();
    this.attempt = ctl;
    const changed = this.phase === 'registered' && this.spec !== undefined && this.spec !== this.sent ? this.spec : undefined;
    try {
      if (changed !== undefined) {
        await this.o.api.register(changed, ctl.signal);
        this.sent = changed;
      } else await this.o.api.renew(ctl.signal);
    } catch (e) {
      // Read through a method: TypeScript would keep the narrowing from above across the await.
      if (this.is('stopped')) return;
      if (isControlPlaneError(e, LEASE_NOT_FOUND)) {
        // While leaving, coming back would undo the drain: let it go.
        if (this.is('draining')) return;
        this.phase = 'registering';
        this.log.warn('the instance lease was lost; registering again', { instance: this.o.api.instance });
        this.o.onLeaseLost();
        return this.register();
      }
      if (ctl.signal.aborted) {
        this.schedule(this.renewDelay(), () => this.renew());
        return;
      }
      // The lease outlives a few failed renewals; a server that comes back within the TTL never notices.
      const delay = this.renewBackoff.next();
      const n = this.renewBackoff.failures;
      const details = { instance: this.o.api.instance, error: errorMessage(e), failures: n, retryInMs: delay };
      if (n === 1 || n % 10 === 0) this.log.warn('cannot renew the instance lease; retrying', details);
      else this.log.debug('still cannot renew the instance lease', details);
      this.schedule(delay, () => this.renew());
      return;
    } finally {
      if (this.attempt === ctl) this.attempt = undefined;
    }
    this.renewBackoff.reset();
    this.schedule(this.phase === 'registered' && this.spec !== this.sent ? 0 : this.renewDelay(), () => this.renew());
  }
}
