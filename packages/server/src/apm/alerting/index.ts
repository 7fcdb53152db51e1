export * from './burn-rate.js';
export * from './contention.js';
export * from './evaluator.js';
export * from './measure.js';
export * from './resources.js';
export * from './routes.js';
export * from './webhook.js';
