export * from '../inbound/index.js';
export { InboundRuntime, rejectionHeaders, type Call, type PlinthOptions, type Started } from './runtime.js';
export { onResponseEnd, plinth, sendRejection, type PlinthHandler, type PlinthNodeOptions } from './node.js';
export { plinthExpress, type PlinthExpressOptions } from './express.js';
export { plinthFastify, type PlinthFastifyOptions } from './fastify.js';
export { plinthHono, type PlinthHonoOptions } from './hono.js';
