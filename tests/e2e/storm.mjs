// The webhook storm the ordering tests share: a customer's life in Stripe events, shuffled and duplicated.
import assert from 'node:assert/strict';
import { customerObject, invoiceObject, makeEvent, subscription } from './harness.mjs';

export const T0 = Math.floor(Date.now() / 1000) - 40 * 86400;
export const DAY = 86400;

/** A customer's life in Stripe events, in the order Stripe emitted them. */
export function lifecycle(prefix) {
  const cus = `cus_${prefix}`;
  const sub = `sub_${prefix}`;
  const events = [];
  events.push(makeEvent(`evt_${prefix}_c1`, 'customer.created', T0, customerObject(cus, `${prefix}@example.com`, `user_${prefix}`)));
  events.push(makeEvent(`evt_${prefix}_s1`, 'customer.subscription.created', T0, subscription(sub, cus, 'incomplete', 'starter_monthly', T0)));
  // Same second as .created: only previous_attributes says which came last.
  events.push(makeEvent(`evt_${prefix}_s2`, 'customer.subscription.updated', T0, subscription(sub, cus, 'active', 'starter_monthly', T0), { status: 'incomplete' }));
  events.push(makeEvent(`evt_${prefix}_i1`, 'invoice.paid', T0 + 1, invoiceObject(`in_${prefix}_1`, cus, sub, 'paid')));
  events.push(makeEvent(`evt_${prefix}_s3`, 'customer.subscription.updated', T0 + 5 * DAY, subscription(sub, cus, 'active', 'scale_monthly', T0), { items: {} }));
  events.push(makeEvent(`evt_${prefix}_i2`, 'invoice.payment_failed', T0 + 30 * DAY, invoiceObject(`in_${prefix}_2`, cus, sub, 'open')));
  events.push(makeEvent(`evt_${prefix}_s4`, 'customer.subscription.updated', T0 + 30 * DAY, subscription(sub, cus, 'past_due', 'scale_monthly', T0 + 30 * DAY), { status: 'active' }));
  events.push(makeEvent(`evt_${prefix}_i3`, 'invoice.paid', T0 + 32 * DAY, invoiceObject(`in_${prefix}_2`, cus, sub, 'paid')));
  events.push(makeEvent(`evt_${prefix}_s5`, 'customer.subscription.updated', T0 + 32 * DAY, subscription(sub, cus, 'active', 'scale_monthly', T0 + 30 * DAY, { cancel_at_period_end: true }), { status: 'past_due' }));
  events.push(makeEvent(`evt_${prefix}_u1`, 'price.created', T0, { id: 'price_x', object: 'price' }));
  return events;
}

export async function finalState(server, prefix) {
  const r = await server.get(`/v1/customers?stripe_customer_id=cus_${prefix}`);
  assert.equal(r.status, 200);
  assert.equal(r.json.data.length, 1);
  const c = r.json.data[0];
  return { role: c.role, plan: c.plan, email: c.email, external_id: c.external_id,
           status: c.subscription.status, cancel_at_period_end: c.subscription.cancel_at_period_end,
           interval: c.subscription.interval };
}

export function shuffle(array, seed) {
  let s = seed;
  const rand = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648; };
  for (let i = array.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [array[i], array[j]] = [array[j], array[i]];
  }
  return array;
}

