// One fastify service for the tracing-overhead benchmark, in the variant named by argv[2], exporting (when
// it traces) to the sink at argv[3]. Every variant answers GET /hello with the same small JSON.
//   none         fastify alone
//   als          + one AsyncLocalStorage.run per request and nothing else: the context propagation any
//                tracer pays on Node 20 (async_hooks then work on every promise and resource), for reference
//   sdk_off      + the Plinth SDK's inbound middleware (plinthFastify, empty StaticGovernance), no tracing
//   sdk100/sdk1  + Plinth tracing: createTracing({ sampleRatio: 1 | 0.01, exporter: { url } })
//   otel100/otel1  fastify under the OpenTelemetry NodeSDK with HttpInstrumentation,
//                  ParentBased(TraceIdRatioBased(1 | 0.01)), BatchSpanProcessor → OTLPTraceExporter (http/json)
// Both exporters run with their library's default compression, which is none for each (OpenTelemetry JS's
// OTLP exporters and Plinth's OtlpExporter alike): what a service gets unless it asks for gzip.
// Prints {"port","pid","variant"} once listening; flushes and exits when its stdin closes.
const [variant, sinkUrl] = process.argv.slice(2);
const VARIANTS = ['none', 'als', 'sdk_off', 'sdk100', 'sdk1', 'otel100', 'otel1'];
if (!VARIANTS.includes(variant) || !sinkUrl) throw new Error(`usage: node service-child.mjs ${VARIANTS.join('|')} SINK_URL`);

const SERVICE = 'bench-hello';
const NAMESPACE = 'bench';
/** The SDK exporter's defaults, given to OpenTelemetry's BatchSpanProcessor too (its own default delay is 5 s). */
export const BATCH = { maxQueueSize: 2048, maxBatchSize: 512, flushMs: 1000 };
const ratio = variant.endsWith('100') ? 1 : 0.01;

let shutdown = async () => {};

if (variant.startsWith('otel')) {
  // Started before fastify (and with it node:http) is loaded, as `node --import` of a setup file would.
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const { HttpInstrumentation } = await import('@opentelemetry/instrumentation-http');
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
  const { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } = await import('@opentelemetry/sdk-trace-base');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  // Tracing only, as in the Plinth variants: NodeSDK's defaults would also start OTLP metrics and logs
  // exporters (to localhost:4318) and record HTTP metrics on every request.
  process.env.OTEL_METRICS_EXPORTER = 'none';
  process.env.OTEL_LOGS_EXPORTER = 'none';
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({ 'service.name': SERVICE, 'service.namespace': NAMESPACE }),
    autoDetectResources: false,
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }),
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: `${sinkUrl}/${variant}/v1/traces` }), {
        maxQueueSize: BATCH.maxQueueSize,
        maxExportBatchSize: BATCH.maxBatchSize,
        scheduledDelayMillis: BATCH.flushMs,
      }),
    ],
    instrumentations: [new HttpInstrumentation()],
  });
  sdk.start();
  shutdown = () => sdk.shutdown();
}

const { default: Fastify } = await import('fastify');
const app = Fastify({ logger: false });

if (variant.startsWith('sdk')) {
  const { plinthFastify } = await import('../../packages/sdk/dist/middleware/index.js');
  const { StaticGovernance } = await import('../../packages/sdk/dist/governance/source.js');
  const options = { service: SERVICE, governance: new StaticGovernance() };
  if (variant !== 'sdk_off') {
    const { createTracing } = await import('../../packages/sdk/dist/tracing/index.js');
    const tracing = createTracing({
      service: SERVICE,
      namespace: NAMESPACE,
      sampleRatio: ratio,
      exporter: { url: `${sinkUrl}/${variant}`, maxQueueSize: BATCH.maxQueueSize, maxBatchSize: BATCH.maxBatchSize, flushMs: BATCH.flushMs },
    });
    options.tracing = tracing;
    shutdown = () => tracing.shutdown();
  }
  await app.register(plinthFastify, options);
}

if (variant === 'als') {
  const { AsyncLocalStorage } = await import('node:async_hooks');
  const storage = new AsyncLocalStorage();
  // Callback-style, as the SDK's hook: the rest of the request runs inside `run`.
  app.addHook('onRequest', (request, _reply, done) => storage.run({ request }, done));
}

const body = { hello: 'world', service: SERVICE };
app.get('/hello', async () => body);

await app.listen({ host: '127.0.0.1', port: 0 });
app.server.keepAliveTimeout = 60_000;
process.stdout.write(`${JSON.stringify({ port: app.server.address().port, pid: process.pid, variant })}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 5000).unref();
  await app.close().catch(() => {});
  await shutdown().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).resume();
