// The sandbox's money paths driven by the official stripe SDK: test cards, payment intents, refunds,
// payment_behavior, prorations (preview, then the change), dunning and pauses on a test clock.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertStripeShape, startSandbox, wireGet } from './harness.mjs';

let child;
let stripe;
const day = 86400;
const wire = (path) => wireGet(stripe.getApiField('port'), path);

before(async () => {
  ({ child, stripe } = await startSandbox());
});
after(() => child.kill('SIGTERM'));

async function monthlyPrice(amount, extra = {}) {
  return stripe.prices.create({ product_data: { name: `Plan ${amount}` }, currency: 'usd', unit_amount: amount, recurring: { interval: 'month' }, ...extra });
}

async function clockCustomer(t0, pm = 'pm_card_visa') {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t0 });
  const params = { email: `c${Math.random()}@example.com`, test_clock: clock.id };
  if (pm) Object.assign(params, { payment_method: pm, invoice_settings: { default_payment_method: pm } });
  const customer = await stripe.customers.create(params);
  return { clock, customer };
}

test('test cards: visa pays, chargeDeclined is declined, refunds follow Stripe\'s rules', async () => {
  const customer = await stripe.customers.create({ email: 'cards@example.com' });
  await assert.rejects(stripe.paymentMethods.attach('pm_card_chargeDeclined', { customer: customer.id }),
    (e) => e.type === 'StripeCardError' && e.code === 'card_declined' && e.statusCode === 402);

  const declined = await stripe.paymentIntents.create({ amount: 2000, currency: 'usd', customer: customer.id, payment_method: 'pm_card_chargeDeclined', confirm: true })
    .then(() => null, (e) => e);
  assert.equal(declined.code, 'card_declined');
  assert.equal(declined.decline_code, 'generic_decline');
  assert.equal(declined.payment_intent.status, 'requires_payment_method');

  const pm = await stripe.paymentMethods.create({ type: 'card', card: { number: '4242 4242 4242 4242', exp_month: 12, exp_year: 2034, cvc: '123' } });
  assert.equal(pm.card.last4, '4242');
  assert.equal(pm.card.brand, 'visa');
  await assert.rejects(stripe.paymentMethods.create({ type: 'card', card: { number: '4242 4242 4242 4241', exp_month: 12, exp_year: 2034 } }),
    (e) => e.code === 'incorrect_number' && e.param === 'card[number]');
  await stripe.paymentMethods.attach(pm.id, { customer: customer.id });
  assert.deepEqual((await stripe.customers.listPaymentMethods(customer.id)).data.map((p) => p.id), [pm.id]);

  const pi = await stripe.paymentIntents.create({ amount: 2000, currency: 'usd', customer: customer.id, payment_method: pm.id, confirm: true, description: 'Credit bundle' });
  assert.equal(pi.status, 'succeeded');
  assert.equal(pi.amount_received, 2000);
  const charge = await stripe.charges.retrieve(pi.latest_charge);
  assert.equal(charge.paid, true);
  assert.equal(charge.payment_intent, pi.id);
  assert.equal(charge.payment_method_details.card.last4, '4242');

  const partial = await stripe.refunds.create({ payment_intent: pi.id, amount: 500 });
  assert.equal(partial.status, 'succeeded');
  await assert.rejects(stripe.refunds.create({ charge: charge.id, amount: 1600 }), (e) => e.code === 'amount_too_large');
  await stripe.refunds.create({ charge: charge.id });
  const refunded = await stripe.charges.retrieve(charge.id);
  assert.equal(refunded.amount_refunded, 2000);
  assert.equal(refunded.refunded, true);
  await assert.rejects(stripe.refunds.create({ charge: charge.id }), (e) => e.code === 'charge_already_refunded');
  const events = (await stripe.events.list({ limit: 100 })).data.filter((e) => e.data.object.id === charge.id).map((e) => e.type);
  assert.deepEqual(events.sort(), ['charge.refunded', 'charge.refunded', 'charge.succeeded']);

  assertStripeShape('payment_method', await wire(`/v1/payment_methods/${pm.id}`));
  assertStripeShape('payment_intent', await wire(`/v1/payment_intents/${pi.id}`));
  assertStripeShape('charge', await wire(`/v1/charges/${charge.id}`));
  assertStripeShape('refund', await wire(`/v1/refunds/${partial.id}`));
});

test('3-D Secure: on session the payment waits for authentication; off session it fails', async () => {
  const customer = await stripe.customers.create({ email: '3ds@example.com' });
  const pi = await stripe.paymentIntents.create({ amount: 1000, currency: 'usd', customer: customer.id, payment_method: 'pm_card_authenticationRequired', confirm: true });
  assert.equal(pi.status, 'requires_action');
  assert.equal(pi.next_action.type, 'redirect_to_url');
  const res = await fetch(pi.next_action.redirect_to_url.url, { method: 'POST', body: 'action=approve', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  assert.equal(res.status, 200);
  assert.equal((await stripe.paymentIntents.retrieve(pi.id)).status, 'succeeded');
  await assert.rejects(stripe.paymentIntents.create({ amount: 1000, currency: 'usd', customer: customer.id, payment_method: 'pm_card_authenticationRequired', confirm: true, off_session: true }),
    (e) => e.code === 'authentication_required');
});

test('payment_behavior: error_if_incomplete refuses, allow_incomplete expires after 23 hours, default_incomplete waits for payment', async () => {
  const t0 = Date.UTC(2026, 3, 1) / 1000;
  const price = await monthlyPrice(1000);
  const { clock, customer } = await clockCustomer(t0, 'pm_card_chargeCustomerFail');
  await assert.rejects(stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }], payment_behavior: 'error_if_incomplete' }),
    (e) => e.code === 'card_declined');
  assert.equal((await stripe.subscriptions.list({ customer: customer.id, status: 'all' })).data.length, 0);

  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });
  assert.equal(sub.status, 'incomplete');
  const open = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(open.status, 'open');
  assert.equal(open.attempt_count, 1);
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t0 + 23 * 3600 });
  const expired = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(expired.status, 'incomplete_expired');
  assert.equal((await stripe.invoices.retrieve(sub.latest_invoice)).status, 'void');

  const later = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }], payment_behavior: 'default_incomplete' });
  assert.equal(later.status, 'incomplete');
  assert.equal((await stripe.invoices.retrieve(later.latest_invoice)).attempt_count, 0);
  await assert.rejects(stripe.invoices.pay(later.latest_invoice), (e) => e.code === 'card_declined');
  const paid = await stripe.invoices.pay(later.latest_invoice, { payment_method: 'pm_card_visa' });
  assert.equal(paid.status, 'paid');
  assert.equal((await stripe.subscriptions.retrieve(later.id)).status, 'active');
});

test('proration: a preview and the change agree to the cent (10.00 -> 20.00 halfway = +5.00), billed at renewal', async () => {
  const t0 = Date.UTC(2026, 3, 1) / 1000;  // April: 30 days
  const basic = await monthlyPrice(1000, { nickname: 'Basic' });
  const premium = await monthlyPrice(2000, { nickname: 'Premium' });
  const { clock, customer } = await clockCustomer(t0);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: basic.id }] });
  assert.equal(sub.status, 'active');
  const halfway = t0 + 15 * day;
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: halfway });
  const item = sub.items.data[0];
  const details = { items: [{ id: item.id, price: premium.id }], proration_date: halfway };
  const preview = await stripe.invoices.createPreview({ customer: customer.id, subscription: sub.id, subscription_details: details });
  const prorations = preview.lines.data.filter((l) => l.parent.subscription_item_details.proration);
  assert.deepEqual(prorations.map((l) => l.amount).sort((a, b) => a - b), [-500, 1000]);
  assert.equal(preview.amount_due, 500 + 2000);  // prorations + May at the new price
  assertStripeShape('invoice', preview);

  const updated = await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price: premium.id }], proration_date: halfway });
  assert.equal(updated.items.data[0].price.id, premium.id);
  const pending = await stripe.invoiceItems.list({ customer: customer.id, pending: true });
  assert.deepEqual(pending.data.map((i) => i.amount).sort((a, b) => a - b), [-500, 1000]);
  assertStripeShape('invoiceitem', await wire(`/v1/invoiceitems/${pending.data[0].id}`));
  assertStripeShape('subscription_item', await wire(`/v1/subscription_items/${item.id}`));

  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2026, 4, 1) / 1000 + 60 });
  const renewal = await stripe.invoices.retrieve((await stripe.subscriptions.retrieve(sub.id)).latest_invoice);
  assert.equal(renewal.billing_reason, 'subscription_cycle');
  assert.equal(renewal.total, preview.total);
  assert.equal(renewal.amount_paid, 2500);
  assert.equal((await stripe.invoiceItems.list({ customer: customer.id, pending: true })).data.length, 0);

  // A quantity change through subscription_items with always_invoice bills the proration at once.
  const items = await stripe.subscriptionItems.list({ subscription: sub.id });
  assert.equal(items.data.length, 1);
  const mid = Date.UTC(2026, 4, 16, 12) / 1000;
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: mid });
  await stripe.subscriptionItems.update(item.id, { quantity: 2, proration_behavior: 'always_invoice', proration_date: mid });
  const immediate = await stripe.invoices.retrieve((await stripe.subscriptions.retrieve(sub.id)).latest_invoice);
  assert.equal(immediate.billing_reason, 'subscription_update');
  assert.equal(immediate.status, 'paid');
  assert.equal(immediate.total, 1000);  // May has 31 days; 15.5 days left: -1000 + 2000 for 2 seats
});

test('proration: monthly to yearly resets the anchor and invoices the new year at once', async () => {
  const t0 = Date.UTC(2026, 3, 1) / 1000;
  const monthly = await monthlyPrice(3000);
  const yearly = await stripe.prices.create({ product: monthly.product, currency: 'usd', unit_amount: 30000, recurring: { interval: 'year' } });
  const { clock, customer } = await clockCustomer(t0);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: monthly.id }] });
  const halfway = t0 + 15 * day;
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: halfway });
  const switched = await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, price: yearly.id }] });
  assert.equal(switched.billing_cycle_anchor, halfway);
  assert.equal(switched.items.data[0].current_period_end, Date.UTC(2027, 3, 16) / 1000);
  const invoice = await stripe.invoices.retrieve(switched.latest_invoice);
  assert.equal(invoice.total, 30000 - 1500);
  assert.equal(invoice.status, 'paid');
});

test('dunning: a failing renewal goes past_due, is retried 7 times over 2 weeks, then the subscription is canceled', async () => {
  const t0 = Date.UTC(2026, 3, 1) / 1000;
  const price = await monthlyPrice(1500);
  const { clock, customer } = await clockCustomer(t0);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });
  assert.equal(sub.status, 'active');
  const failing = await stripe.paymentMethods.attach('pm_card_chargeCustomerFail', { customer: customer.id });
  await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: failing.id } });
  const renewalAt = Date.UTC(2026, 4, 1) / 1000;
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: renewalAt + 60 });
  const pastDue = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(pastDue.status, 'past_due');
  const invoice = await stripe.invoices.retrieve(pastDue.latest_invoice);
  assert.equal(invoice.status, 'open');
  assert.equal(invoice.attempt_count, 1);
  assert.equal(invoice.next_payment_attempt, renewalAt + day);

  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: renewalAt + 15 * day });
  const ended = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(ended.status, 'canceled');
  assert.equal(ended.ended_at, renewalAt + 14 * day);
  const final = await stripe.invoices.retrieve(invoice.id);
  assert.equal(final.attempt_count, 8);
  assert.equal(final.next_payment_attempt, null);
  const failures = (await stripe.events.list({ limit: 100 }).autoPagingToArray({ limit: 10000 }))
    .filter((e) => e.type === 'invoice.payment_failed' && e.data.object.id === invoice.id);
  assert.equal(failures.length, 8);
});

test('dunning end state and schedule are settings: unpaid after 2 retries', async () => {
  const other = await startSandbox('sk_test_other', ['--dunning-end-state', 'unpaid', '--dunning-retry-days', '2,4']);
  try {
    const s = other.stripe;
    const t0 = Date.UTC(2026, 3, 1) / 1000;
    const price = await s.prices.create({ product_data: { name: 'X' }, currency: 'usd', unit_amount: 900, recurring: { interval: 'month' } });
    const clock = await s.testHelpers.testClocks.create({ frozen_time: t0 });
    const customer = await s.customers.create({ test_clock: clock.id, payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await s.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });
    const failing = await s.paymentMethods.attach('pm_card_chargeCustomerFail', { customer: customer.id });
    await s.subscriptions.update(sub.id, { default_payment_method: failing.id });
    await s.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2026, 4, 1) / 1000 + 3 * day });
    assert.equal((await s.subscriptions.retrieve(sub.id)).status, 'past_due');
    await s.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2026, 4, 1) / 1000 + 5 * day });
    const unpaid = await s.subscriptions.retrieve(sub.id);
    assert.equal(unpaid.status, 'unpaid');
    assert.equal((await s.invoices.retrieve(unpaid.latest_invoice)).attempt_count, 3);
  } finally {
    other.child.kill('SIGTERM');
  }
});

test('pauses: pause_collection voids renewals; a trial without a card pauses and resumes', async () => {
  const t0 = Date.UTC(2026, 3, 1) / 1000;
  const price = await monthlyPrice(1200);
  const { clock, customer } = await clockCustomer(t0);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });
  await stripe.subscriptions.update(sub.id, { pause_collection: { behavior: 'void' } });
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2026, 4, 1) / 1000 + 60 });
  const paused = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(paused.status, 'active');
  assert.equal((await stripe.invoices.retrieve(paused.latest_invoice)).status, 'void');
  await stripe.subscriptions.update(sub.id, { pause_collection: '' });
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2026, 5, 1) / 1000 + 60 });
  assert.equal((await stripe.invoices.retrieve((await stripe.subscriptions.retrieve(sub.id)).latest_invoice)).status, 'paid');

  const { clock: clock2, customer: noCard } = await clockCustomer(t0, null);
  const trial = await stripe.subscriptions.create({ customer: noCard.id, items: [{ price: price.id }], trial_period_days: 7,
    trial_settings: { end_behavior: { missing_payment_method: 'pause' } } });
  await stripe.testHelpers.testClocks.advance(clock2.id, { frozen_time: t0 + 8 * day });
  assert.equal((await stripe.subscriptions.retrieve(trial.id)).status, 'paused');
  await assert.rejects(stripe.subscriptions.resume(sub.id), (e) => e.statusCode === 400);
  const visa = await stripe.paymentMethods.attach('pm_card_visa', { customer: noCard.id });
  await stripe.customers.update(noCard.id, { invoice_settings: { default_payment_method: visa.id } });
  const resumed = await stripe.subscriptions.resume(trial.id, { billing_cycle_anchor: 'now' });
  assert.equal(resumed.status, 'active');
  assert.equal(resumed.billing_cycle_anchor, t0 + 8 * day);
  assert.equal((await stripe.invoices.retrieve(resumed.latest_invoice)).amount_paid, 1200);
  const types = (await stripe.events.list({ limit: 100 })).data.filter((e) => e.data.object.id === trial.id).map((e) => e.type);
  assert.ok(types.includes('customer.subscription.paused') && types.includes('customer.subscription.resumed'), types.join());
});

test('cancel with prorate credits the unused time to the customer balance', async () => {
  const t0 = Date.UTC(2026, 3, 1) / 1000;
  const price = await monthlyPrice(3000);
  const { clock, customer } = await clockCustomer(t0);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t0 + 20 * day });
  const canceled = await stripe.subscriptions.cancel(sub.id, { prorate: true });
  assert.equal(canceled.status, 'canceled');
  assert.equal((await stripe.customers.retrieve(customer.id)).balance, -1000);  // 10 of 30 days unused
});

test('without a test clock, subscriptions live in real time: a trial ending in 2 s converts and is invoiced', async () => {
  const price = await monthlyPrice(700);
  const customer = await stripe.customers.create({ email: 'wall@example.com', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
  const trialEnd = Math.floor(Date.now() / 1000) + 2;
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }], trial_end: trialEnd });
  assert.equal(sub.status, 'trialing');
  let converted;
  for (let i = 0; i < 100 && !converted; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const s = await stripe.subscriptions.retrieve(sub.id);
    if (s.status === 'active') converted = s;
  }
  assert.ok(converted, 'the trial converted on the wall clock');
  assert.equal(converted.items.data[0].current_period_start, trialEnd);
  const invoice = await stripe.invoices.retrieve(converted.latest_invoice);
  assert.equal(invoice.billing_reason, 'subscription_cycle');
  assert.equal(invoice.amount_paid, 700);
});

test('subscription schedules: from_subscription, a second phase that runs at the period end, release and cancel', async () => {
  const t0 = 1780000000;
  const { clock, customer } = await clockCustomer(t0);
  const high = await monthlyPrice(2000);
  const low = await monthlyPrice(1000);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: high.id }] });
  const end = sub.items.data[0].current_period_end;

  const schedule = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  assert.equal(schedule.status, 'active');
  assert.equal(schedule.subscription, sub.id);
  assert.deepEqual(schedule.phases.map((p) => [p.start_date, p.end_date, p.items[0].price]), [[t0, end, high.id]]);
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).schedule, schedule.id);
  await assert.rejects(stripe.subscriptionSchedules.create({ from_subscription: sub.id }),
    (e) => e.statusCode === 400 && e.param === 'from_subscription');
  // Stripe's rule: a scheduled subscription's cancellation goes through the schedule.
  await assert.rejects(stripe.subscriptions.update(sub.id, { cancel_at_period_end: true }), (e) => e.statusCode === 400);
  await assert.rejects(stripe.subscriptionSchedules.update(schedule.id, {
    phases: [{ items: [{ price: high.id }], start_date: t0 + 5, end_date: end }, { items: [{ price: low.id }], iterations: 1 }],
  }), (e) => e.param === 'phases[0][start_date]');
  await assert.rejects(stripe.subscriptionSchedules.update(schedule.id, {
    phases: [{ items: [{ price: low.id }], start_date: t0, end_date: end }],
  }), (e) => e.param === 'phases[0][items]');

  const updated = await stripe.subscriptionSchedules.update(schedule.id, {
    phases: [{ items: [{ price: high.id, quantity: 1 }], start_date: t0, end_date: end },
      { items: [{ price: low.id, quantity: 1 }], iterations: 1 }],
    end_behavior: 'release',
  });
  assert.deepEqual(updated.phases.map((p) => [p.start_date, p.items[0].price]), [[t0, high.id], [end, low.id]]);

  // The clock crosses the period end: the subscription renews on the second phase's price, unprorated.
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: end + 3600 });
  const renewed = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(renewed.items.data[0].price.id, low.id);
  assert.equal(renewed.items.data[0].current_period_start, end);
  const invoices = await stripe.invoices.list({ customer: customer.id });
  assert.deepEqual(invoices.data.map((i) => [i.billing_reason, i.amount_paid]), [['subscription_cycle', 1000], ['subscription_create', 2000]]);
  assert.deepEqual((await stripe.subscriptionSchedules.retrieve(schedule.id)).current_phase,
    { start_date: end, end_date: updated.phases[1].end_date });
  // The last phase ends: the schedule completes and lets the subscription go on.
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: updated.phases[1].end_date + 3600 });
  const completed = await stripe.subscriptionSchedules.retrieve(schedule.id);
  assert.equal(completed.status, 'completed');
  const after = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(after.schedule, null);
  assert.equal(after.status, 'active');
  assert.equal(after.items.data[0].price.id, low.id);
  await assert.rejects(stripe.subscriptionSchedules.release(schedule.id), (e) => e.statusCode === 400);

  // Release lets the subscription go as it is; cancel ends it at once.
  const other = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: high.id }] });
  const released = await stripe.subscriptionSchedules.release((await stripe.subscriptionSchedules.create({ from_subscription: other.id })).id);
  assert.equal(released.status, 'released');
  assert.equal(released.released_subscription, other.id);
  assert.equal((await stripe.subscriptions.retrieve(other.id)).schedule, null);
  const doomed = await stripe.subscriptionSchedules.create({ from_subscription: other.id });
  const canceled = await stripe.subscriptionSchedules.cancel(doomed.id);
  assert.equal(canceled.status, 'canceled');
  assert.equal((await stripe.subscriptions.retrieve(other.id)).status, 'canceled');
  // A subscription that ends takes its schedule with it.
  const third = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: low.id }] });
  const attached = await stripe.subscriptionSchedules.create({ from_subscription: third.id });
  await stripe.subscriptions.cancel(third.id);
  assert.equal((await stripe.subscriptionSchedules.retrieve(attached.id)).status, 'canceled');
  const events = (await stripe.events.list({ limit: 100 })).data.map((e) => e.type);
  for (const type of ['subscription_schedule.created', 'subscription_schedule.updated', 'subscription_schedule.completed',
    'subscription_schedule.released', 'subscription_schedule.canceled']) {
    assert.ok(events.includes(type), type);
  }
});
