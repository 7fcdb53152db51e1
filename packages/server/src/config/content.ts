import { createHash } from 'node:crypto';
import { Ajv, type ValidateFunction } from 'ajv';
import { canonicalJson, ConfigFormatError, parseConfigContent, validationError, type ConfigSpec, type FieldError } from '@plinth/core';

const ajv = new Ajv({ allErrors: true, strict: false, validateSchema: true });
/** Compiled schemas by content hash: configs are re-validated on every write, schemas rarely change. */
const compiled = new Map<string, ValidateFunction>();
const MAX_COMPILED = 256;

function compile(schema: Record<string, unknown>, field: string): ValidateFunction {
  const key = createHash('sha256').update(canonicalJson(schema)).digest('hex');
  let fn = compiled.get(key);
  if (fn) return fn;
  try {
    fn = ajv.compile(schema);
  } catch (e) {
    throw validationError([{ field, message: `not a valid JSON Schema: ${(e as Error).message}` }]);
  }
  if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value as string);
  compiled.set(key, fn);
  return fn;
}

function checkOne(spec: ConfigSpec, content: string, field: string, validate: ValidateFunction | undefined, errors: FieldError[]): void {
  let parsed: unknown;
  try {
    parsed = parseConfigContent(spec.format, content);
  } catch (e) {
    if (e instanceof ConfigFormatError) {
      errors.push({ field, message: e.message });
      return;
    }
    throw e;
  }
  if (!validate) return;
  if (!validate(parsed)) {
    for (const err of validate.errors ?? []) {
      const at = err.instancePath === '' ? '' : ` at ${err.instancePath}`;
      errors.push({ field, message: `does not match spec.schema${at}: ${err.message ?? 'invalid'}` });
    }
  }
}

/** A Config's content (and every gray variant) must parse in its format and satisfy its schema. */
export function validateConfigContent(spec: ConfigSpec): void {
  const errors: FieldError[] = [];
  let validate: ValidateFunction | undefined;
  if (spec.schema) {
    if (spec.format === 'text') {
      errors.push({ field: 'spec.schema', message: 'a schema needs format json, yaml or properties' });
    } else {
      validate = compile(spec.schema, 'spec.schema');
    }
  }
  checkOne(spec, spec.content, 'spec.content', validate, errors);
  spec.gray?.forEach((g, i) => checkOne(spec, g.content, `spec.gray[${i}].content`, validate, errors));
  if (errors.length > 0) throw validationError(errors);
}
