import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FaultInjectionSpec, FaultToleranceSpec } from '@plinth/core';
import { StaticGovernance } from '@plinth/sdk';
import { EdgeInboundGovernance } from './engine-governance.js';
import { resource } from './testkit.test.helpers.js';

describe('EdgeInboundGovernance', () => {
  it('keeps every rule but FaultInjection, which the callee itself applies, and follows the source', () => {
    const base = new StaticGovernance();
    const limits = resource('FaultTolerance', 'limits', FaultToleranceSpec.parse({ rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'rateLimit', threshold: 5 }] }] }));
    const chaos = resource('FaultInjection', 'chaos', FaultInjectionSpec.parse({ rules: [{ name: 'slow', targets: [{ service: 'orders' }], delay: { fixedDelayMs: 100 } }] }));
    base.set({ faultTolerance: [limits], faultInjections: [chaos] });
    const edge = new EdgeInboundGovernance(base);
    assert.deepEqual(edge.faultTolerance(), [limits]);
    assert.deepEqual(edge.faultInjections(), []);
    assert.equal(base.faultInjections().length, 1);
    let changed = 0;
    const off = edge.onChange(() => changed++);
    const v = edge.version;
    base.set({ faultTolerance: [] });
    assert.equal(changed, 1);
    assert.notEqual(edge.version, v);
    assert.deepEqual(edge.faultTolerance(), []);
    off();
  });
});
