export { InboundPipeline, type Admission, type InboundOptions, type InboundRequest } from './pipeline.js';
export { buildContext, callerOf, compiledTrafficOf, headerValue, subjectOf, trustedBaggage, type ContextOptions, type ContextRequest, type TrustMode } from './context.js';
export { InboundMetrics, metricsHandler, OTHER_ROUTE, statusClass, type InboundMetricsOptions } from './metrics.js';
export { INBOUND_STATUS, InboundCodes, type InboundCode, type Rejection } from './rejection.js';
export { acquireProcessSignal, BbrEstimator, SAMPLE_INTERVAL_MS, type OverloadSignal } from './overload.js';
