export {
  BREAKER_DEFAULTS,
  CircuitBreaker,
  breakerOptionsOf,
  statusClassifier,
  type BreakerListener,
  type BreakerOptions,
  type BreakerState,
  type BreakerStrategy,
  type BreakerWindow,
} from './breaker.js';
export {
  RETRY_BUDGET_DEFAULTS,
  RETRY_DEFAULTS,
  RetryBudget,
  RetryPolicy,
  parseRetryAfter,
  retryBudgetOptionsOf,
  retryOptionsOf,
  type RetryBudgetOptions,
  type RetryOptions,
} from './retry.js';
export { MAX_TIMEOUT_MS, deadlineAt, formatGrpcTimeout, formatTimeout, parseGrpcTimeout, parseTimeoutHeader, remainingMs } from './deadline.js';
export { TimerWheel, sharedWheel, type Expirable, type Schedule, type TimerWheelOptions } from './timer-wheel.js';
export { BULKHEAD_DEFAULTS, Bulkhead, type BulkheadOptions } from './bulkhead.js';
