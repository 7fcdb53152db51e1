import type { Logger } from 'pino';
import { PlinthError, RoleBindingSpec, RoleSpec, subjectId, type PolicyRule, type Resource, type WatchEvent } from '@plinth/core';
import type { Store } from '../store/types.js';

interface CompiledRule {
  verbs: ReadonlySet<string>;
  kinds: ReadonlySet<string>;
  namespaces: ReadonlySet<string>;
}

interface RoleEntry {
  rules: readonly PolicyRule[];
  compiled: CompiledRule[];
  revision: number;
}

interface BindingEntry {
  namespace: string;
  role: string;
  subjects: ReadonlySet<string>;
  revision: number;
}

/** Everything one subject holds, and the answers already given for it. */
interface Grants {
  rules: CompiledRule[];
  decisions: Map<string, boolean>;
}

const WILDCARD = '*';
/** Bounds memory when callers probe many distinct (verb, kind, namespace) triples. */
const MAX_DECISIONS_PER_SUBJECT = 4096;
const MAX_SUBJECTS = 10_000;

/**
 * Roles and RoleBindings, indexed in memory. A RoleBinding in namespace N grants the Role N/<spec.role>;
 * the Role's rules name the namespaces they cover ('*' = all). Decisions are memoized per subject and
 * the memo is dropped on any Role or RoleBinding change (rare next to checks).
 */
export class Rbac {
  private roles = new Map<string, RoleEntry>();
  private bindings = new Map<string, BindingEntry>();
  private memo = new Map<string, Grants>();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** Loads both kinds; returns the store revision each list reflects. */
  async load(): Promise<{ Role: number; RoleBinding: number }> {
    const roles = await this.store.list('Role');
    const bindings = await this.store.list('RoleBinding');
    this.roles = new Map();
    this.bindings = new Map();
    for (const r of roles.items) this.setRole(r);
    for (const b of bindings.items) this.setBinding(b);
    this.memo.clear();
    return { Role: roles.revision, RoleBinding: bindings.revision };
  }

  apply(ev: WatchEvent): void {
    const r = ev.resource;
    if (r.kind !== 'Role' && r.kind !== 'RoleBinding') return;
    const k = key(r.metadata.namespace, r.metadata.name);
    const map: Map<string, { revision: number }> = r.kind === 'Role' ? this.roles : this.bindings;
    const cur = map.get(k);
    if (cur && cur.revision >= ev.revision) return;
    if (ev.type === 'DELETED') map.delete(k);
    else if (r.kind === 'Role') this.setRole(r);
    else this.setBinding(r);
    this.memo.clear();
  }

  can(subject: string, verb: string, kind: string, namespace: string): boolean {
    const g = this.grantsOf(subject);
    const dk = `${verb}\u0000${kind}\u0000${namespace}`;
    const known = g.decisions.get(dk);
    if (known !== undefined) return known;
    const allowed = holds(g.rules, verb, kind, namespace);
    if (g.decisions.size >= MAX_DECISIONS_PER_SUBJECT) g.decisions.clear();
    g.decisions.set(dk, allowed);
    return allowed;
  }

  /**
   * Nobody grants what they do not hold: every (verb, kind, namespace) the rules name must be held, and a
   * '*' in the rules must be held as '*' (holding every verb known today is not holding future ones).
   */
  assertCanGrant(subject: string, rules: readonly PolicyRule[]): void {
    const held = this.grantsOf(subject).rules;
    for (const rule of rules) {
      if (held.some((h) => covers(h.verbs, rule.verbs) && covers(h.kinds, rule.kinds) && covers(h.namespaces, rule.namespaces))) continue;
      for (const verb of rule.verbs) {
        for (const kind of rule.kinds) {
          for (const ns of rule.namespaces) {
            if (!holds(held, verb, kind, ns)) {
              throw new PlinthError(
                'ESCALATION_DENIED',
                `${subject} cannot grant ${verb} on ${kind} in namespace ${ns}: it does not hold that permission itself`,
              );
            }
          }
        }
      }
    }
  }

  /** Rules of one Role, e.g. to check a new RoleBinding with assertCanGrant. */
  roleRules(namespace: string, name: string): readonly PolicyRule[] | undefined {
    return this.roles.get(key(namespace, name))?.rules;
  }

  private grantsOf(subject: string): Grants {
    let g = this.memo.get(subject);
    if (g) return g;
    const rules: CompiledRule[] = [];
    for (const b of this.bindings.values()) {
      if (!b.subjects.has(subject)) continue;
      const role = this.roles.get(key(b.namespace, b.role));
      if (role) rules.push(...role.compiled);
    }
    g = { rules, decisions: new Map() };
    if (this.memo.size >= MAX_SUBJECTS) this.memo.clear();
    this.memo.set(subject, g);
    return g;
  }

  private setRole(r: Resource): void {
    const parsed = RoleSpec.safeParse(r.spec);
    if (!parsed.success) {
      // The API validates before storing; a role that still fails grants nothing rather than guessing.
      this.log.warn({ role: `${r.metadata.namespace}/${r.metadata.name}` }, 'ignoring a Role whose spec is not valid');
      this.roles.delete(key(r.metadata.namespace, r.metadata.name));
      return;
    }
    const compiled = parsed.data.rules.map((rule) => ({
      verbs: new Set<string>(rule.verbs),
      kinds: new Set(rule.kinds),
      namespaces: new Set<string>(rule.namespaces),
    }));
    this.roles.set(key(r.metadata.namespace, r.metadata.name), { rules: parsed.data.rules, compiled, revision: r.metadata.revision });
  }

  private setBinding(r: Resource): void {
    const parsed = RoleBindingSpec.safeParse(r.spec);
    if (!parsed.success) {
      this.log.warn({ binding: `${r.metadata.namespace}/${r.metadata.name}` }, 'ignoring a RoleBinding whose spec is not valid');
      this.bindings.delete(key(r.metadata.namespace, r.metadata.name));
      return;
    }
    this.bindings.set(key(r.metadata.namespace, r.metadata.name), {
      namespace: r.metadata.namespace,
      role: parsed.data.role,
      subjects: new Set(parsed.data.subjects.map((s) => subjectId(s))),
      revision: r.metadata.revision,
    });
  }
}

function holds(rules: readonly CompiledRule[], verb: string, kind: string, namespace: string): boolean {
  for (const r of rules) {
    if (
      (r.verbs.has(verb) || r.verbs.has(WILDCARD)) &&
      (r.kinds.has(kind) || r.kinds.has(WILDCARD)) &&
      (r.namespaces.has(namespace) || r.namespaces.has(WILDCARD))
    ) {
      return true;
    }
  }
  return false;
}

/** Does one held set include every value (a held '*' includes all; a wanted '*' needs a held '*'). */
function covers(held: ReadonlySet<string>, wanted: readonly string[]): boolean {
  return held.has(WILDCARD) || wanted.every((w) => held.has(w));
}

function key(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
