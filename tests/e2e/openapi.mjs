// The API contract in the end-to-end suite: every response Tally gives through harness.mjs's server.request is
// checked against api/openapi.yaml (status documented, content type documented, JSON body valid against the
// operation's schema). A response the spec does not describe throws, failing the test that received it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import Ajv2020 from 'ajv/dist/2020.js';

let loaded;

/** api/openapi.yaml as an object (YAML 1.2), read once. */
export function openapiSpec(sourceDir) {
  if (!loaded) {
    const spec = parseYaml(readFileSync(join(sourceDir, 'api/openapi.yaml'), 'utf8'));
    // strict: false because the document holds OpenAPI's own keywords beside the schemas (x-tally-access, ...).
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    ajv.addSchema(spec, 'openapi');
    loaded = { spec, ajv, validators: new Map() };
  }
  return loaded.spec;
}

const escapePointer = (s) => s.replaceAll('~', '~0').replaceAll('/', '~1');

function resolve(spec, node, pointer) {
  // Follows a local $ref ("#/components/responses/X") to the node and its JSON pointer.
  while (node && node.$ref) {
    pointer = node.$ref.slice(1);
    node = pointer.split('/').slice(1).reduce((n, p) => n[p.replaceAll('~1', '/').replaceAll('~0', '~')], spec);
  }
  return [node, pointer];
}

/** The spec's path template and operation for |method| |path| (query excluded), or undefined. */
export function findOperation(spec, method, path) {
  const segments = path.split('/').filter(Boolean).map((s) => { try { return decodeURIComponent(s); } catch { return s; } });
  const m = method === 'HEAD' ? 'get' : method.toLowerCase();
  for (const [template, item] of Object.entries(spec.paths)) {
    const parts = template.split('/').filter(Boolean);
    if (parts.length !== segments.length) continue;
    if (!parts.every((p, i) => (p.startsWith('{') ? segments[i] !== '' : p === segments[i]))) continue;
    if (item[m]) return { template, operation: item[m], method: m };
  }
  return undefined;
}

/**
 * Throws when the response is not what api/openapi.yaml says |method| |target| answers. |body| is the text.
 */
export function checkResponse(sourceDir, method, target, status, contentType, body) {
  const spec = openapiSpec(sourceDir);
  const { ajv, validators } = loaded;
  const path = target.split('?')[0];
  const found = findOperation(spec, method, path);
  const where = `${method} ${target} -> ${status}`;
  let responsePointer;
  let response;
  if (!found) {
    // Not a documented operation: only a "no such route" answer is allowed, with the error body.
    if (status !== 404 && status !== 405) throw new Error(`OpenAPI: ${where}: no operation in api/openapi.yaml`);
    [response, responsePointer] = resolve(spec, { $ref: '#/components/responses/Error' }, '');
  } else {
    const responses = found.operation.responses;
    const key = [String(status), `${String(status)[0]}XX`, 'default'].find((k) => responses[k]);
    if (!key) throw new Error(`OpenAPI: ${where}: status not documented for ${found.method} ${found.template}`);
    [response, responsePointer] = resolve(spec, responses[key],
      `/paths/${escapePointer(found.template)}/${found.method}/responses/${key}`);
  }
  if (method === 'HEAD' || body === '') {
    if (response.content && method !== 'HEAD' && status !== 204) {
      throw new Error(`OpenAPI: ${where}: empty body, the spec documents content`);
    }
    return;
  }
  const media = (contentType ?? '').split(';')[0].trim();
  const content = response.content?.[media];
  if (!content) {
    throw new Error(`OpenAPI: ${where}: content type '${media}' not documented (${Object.keys(response.content ?? {})})`);
  }
  if (media !== 'application/json') return;
  let json;
  try { json = JSON.parse(body); } catch { throw new Error(`OpenAPI: ${where}: body is not JSON: ${body.slice(0, 200)}`); }
  const pointer = `openapi#${responsePointer}/content/${escapePointer(media)}/schema`;
  let validate = validators.get(pointer);
  if (!validate) {
    validate = ajv.compile({ $ref: pointer });
    validators.set(pointer, validate);
  }
  if (!validate(json)) {
    const errors = validate.errors.slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
    throw new Error(`OpenAPI: ${where}: body does not match the spec (${pointer}):\n  ${errors.join('\n  ')}\n  body: ${body.slice(0, 400)}`);
  }
}
