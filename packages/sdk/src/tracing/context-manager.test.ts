import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { context, createContextKey, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { parseBaggage } from '../balancing/baggage.js';
import { currentContext, runWithContext, type RequestContext } from '../context.js';
import { AsyncLocalContextManager, ensureContextManager, sharesRequestScope } from './context-manager.js';
import { createTracing, startServerSpan } from './hooks.js';

const KEY = createContextKey('test.key');
const request = (caller: string): RequestContext => ({ trace: undefined, baggage: parseBaggage('biz=1'), deadlineAt: undefined, caller });
const tick = () => new Promise((r) => setImmediate(r));

afterEach(() => {
  context.disable();
});

describe('AsyncLocalContextManager (one storage with the request context)', () => {
  it('keeps the request context across context.with, ROOT_CONTEXT included, and OpenTelemetry values across runWithContext', async () => {
    ensureContextManager();
    const req = request('web');
    const seen = await runWithContext(req, () =>
      context.with(context.active().setValue(KEY, 'v'), async () => {
        await tick();
        const inner = runWithContext(request('other'), () => context.active().getValue(KEY));
        return { ctx: currentContext(), value: context.active().getValue(KEY), inner, root: context.with(ROOT_CONTEXT, () => currentContext()) };
      }),
    );
    assert.equal(seen.ctx, req);
    assert.equal(seen.value, 'v');
    assert.equal(seen.inner, 'v', 'a request context set inside keeps the OpenTelemetry values around it');
    assert.equal(seen.root, req, 'entering a foreign context changes what OpenTelemetry sees, not the request');
  });

  it('binds a function to a context together with its request', async () => {
    ensureContextManager();
    const req = request('web');
    const bound = runWithContext(req, () => context.bind(context.active().setValue(KEY, 'b'), () => ({ ctx: currentContext(), value: context.active().getValue(KEY) })));
    await tick();
    assert.deepEqual(bound(), { ctx: req, value: 'b' });
  });

  it('once disabled sees only ROOT_CONTEXT, and the request context still works', () => {
    const m = new AsyncLocalContextManager();
    context.setGlobalContextManager(m);
    const req = request('web');
    context.disable();
    assert.equal(m.isEnabled, false);
    assert.equal(m.with(ROOT_CONTEXT.setValue(KEY, 1), () => m.active()), ROOT_CONTEXT);
    assert.equal(runWithContext(req, () => currentContext()), req);
  });

  it('enters request and span in one scope with its own manager, and through context.with under a foreign one', async () => {
    for (const foreign of [false, true]) {
      if (foreign) context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      const tracing = createTracing({ service: 'orders', namespace: 'shop', useGlobalProvider: 'never' });
      const h = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined });
      assert.equal(sharesRequestScope(), !foreign);
      const req = request('web');
      const seen = await h.runWithRequest(req, async () => {
        await tick();
        return { ctx: currentContext(), active: trace.getActiveSpan() };
      });
      assert.equal(seen.ctx, req, foreign ? 'foreign manager' : 'own manager');
      assert.equal(seen.active, h.span, foreign ? 'foreign manager' : 'own manager');
      h.end(200);
      context.disable();
    }
  });
});
