import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { PlinthError } from '@plinth/core';

export interface Sealed {
  kid: string;
  iv: string;
  tag: string;
  data: string;
}

interface KeyringFile {
  primary: string;
  keys: Record<string, string>;
}

const KEY_BYTES = 32;

function kidOf(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

/**
 * AES-256-GCM keys for sealing values at rest. The primary key seals; every key in the ring unseals,
 * so rotation adds a key, re-seals, and only then may old keys be retired: no downtime.
 *
 * Source: a key file (JSON, owner-only) or `PLINTH_SECRET_KEYS` = `base64key[,base64key...]` (first is primary).
 */
export class Keyring {
  private keys = new Map<string, Buffer>();
  private primaryKid = '';

  private constructor(private readonly file: string | undefined) {}

  /** Loads the ring; with `create`, a missing file is created with a fresh key. */
  static fromFile(file: string, create: boolean): Keyring {
    const ring = new Keyring(file);
    if (!existsSync(file)) {
      if (!create) throw new PlinthError('INTERNAL', `secret key file ${file} does not exist`);
      const key = randomBytes(KEY_BYTES);
      ring.keys.set(kidOf(key), key);
      ring.primaryKid = kidOf(key);
      ring.save();
      return ring;
    }
    ring.reload();
    return ring;
  }

  static fromEnv(value: string): Keyring {
    const ring = new Keyring(undefined);
    for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
      const key = Buffer.from(part, 'base64');
      if (key.length !== KEY_BYTES) throw new Error('PLINTH_SECRET_KEYS: every key must be 32 bytes, base64-encoded');
      ring.keys.set(kidOf(key), key);
      if (!ring.primaryKid) ring.primaryKid = kidOf(key);
    }
    if (!ring.primaryKid) throw new Error('PLINTH_SECRET_KEYS is empty');
    return ring;
  }

  get primary(): string {
    return this.primaryKid;
  }

  get kids(): string[] {
    return [...this.keys.keys()];
  }

  get fileBacked(): boolean {
    return this.file !== undefined;
  }

  /** Re-reads the key file (another server sharing it may have rotated). */
  reload(): void {
    if (!this.file) return;
    const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as KeyringFile;
    const keys = new Map<string, Buffer>();
    for (const [kid, b64] of Object.entries(parsed.keys)) keys.set(kid, Buffer.from(b64, 'base64'));
    if (!keys.has(parsed.primary)) throw new Error(`secret key file ${this.file}: primary key ${parsed.primary} missing`);
    this.keys = keys;
    this.primaryKid = parsed.primary;
  }

  private save(): void {
    if (!this.file) return;
    const body: KeyringFile = { primary: this.primaryKid, keys: {} };
    for (const [kid, key] of this.keys) body.keys[kid] = key.toString('base64');
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(body, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, this.file);
  }

  /** Adds a new primary key. Returns its id. */
  rotate(): string {
    if (!this.file) {
      throw new PlinthError('BAD_REQUEST', 'keys come from PLINTH_SECRET_KEYS: put the new key first in that list and restart, then re-seal');
    }
    this.reload();
    const key = randomBytes(KEY_BYTES);
    this.keys.set(kidOf(key), key);
    this.primaryKid = kidOf(key);
    this.save();
    return this.primaryKid;
  }

  /** Drops keys other than the primary (after everything was re-sealed). */
  retireOthers(): string[] {
    const gone = this.kids.filter((k) => k !== this.primaryKid);
    for (const k of gone) this.keys.delete(k);
    this.save();
    return gone;
  }

  seal(plaintext: string | Buffer, aad: string): Sealed {
    const key = this.keys.get(this.primaryKid)!;
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(Buffer.from(aad));
    const data = Buffer.concat([c.update(plaintext), c.final()]);
    return { kid: this.primaryKid, iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), data: data.toString('base64') };
  }

  unseal(s: Sealed, aad: string): Buffer {
    let key = this.keys.get(s.kid);
    if (!key && this.file) {
      this.reload();
      key = this.keys.get(s.kid);
    }
    if (!key) throw new PlinthError('INTERNAL', `secret sealed with key ${s.kid}, which this server does not hold`);
    const d = createDecipheriv('aes-256-gcm', key, Buffer.from(s.iv, 'base64'));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(Buffer.from(s.tag, 'base64'));
    return Buffer.concat([d.update(Buffer.from(s.data, 'base64')), d.final()]);
  }
}
