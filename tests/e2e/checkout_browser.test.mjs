// Checkout and the Customer Portal through their hosted pages in headless Chromium: the README's walkthrough
// (pay with 4242 in the sandbox's page, see the customer become professional, advance the clock a month and
// see the renewal paid), declined cards, 3-D Secure, and plan changes in the portal.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Stripe from 'stripe';
import { assertStripeShape, launchBrowser, startSandbox, startTally, wireGet } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function until(fn, what, tries = 400) {
  for (let i = 0; i < tries; i++) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function payWith(page, number, { email } = {}) {
  if (email) await page.fill('#email', email);
  await page.fill('#card_number', number);
  await page.fill('#card_expiry', '12 / 34');
  await page.fill('#card_cvc', '123');
  await page.fill('#billing_name', 'Ada Lovelace');
  await page.click('[data-testid=submit]');
}

test('the README walkthrough: checkout through Tally, pay with 4242, become professional, renew a month later', async () => {
  const tally = await startTally({ STRIPE_WEBHOOK_SECRET: '' });
  const page = await browser.newPage();
  try {
    assert.match(tally.testClock, /^clock_/);
    const app = (await tally.post('/v1/customers', { external_id: 'user_checkout', email: 'ada@example.com', name: 'Ada' })).json;
    const bad = await tally.post('/v1/checkout_sessions', { customer: app.id, plan: 'free' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'plan');
    assert.equal((await tally.post('/v1/checkout_sessions', { customer: 'cust_nope', plan: 'pro' })).status, 404);
    assert.equal((await tally.post('/v1/checkout_sessions', { customer: app.id, plan: 'pro', success_url: 'javascript:x' })).json.error.param, 'success_url');
    assert.equal((await tally.post('/v1/billing_portal_sessions', { customer: app.id })).json.error.param, 'customer');

    const session = await tally.post('/v1/checkout_sessions', { customer: app.id, plan: 'pro', interval: 'month' });
    assert.equal(session.status, 200, JSON.stringify(session.json));
    assert.match(session.json.url, /\/checkout\/cs_test_/);

    await page.goto(session.json.url);
    assert.match(await page.textContent('[data-testid=total]'), /60\.00 USD/);
    await payWith(page, '4000 0000 0000 0002');
    assert.equal(await page.textContent('[data-testid=error]'), 'Your card was declined.');
    await payWith(page, '4242 4242 4242 4242');
    await page.waitForURL(/\/billing\/return\?checkout=success&session_id=cs_test_/);
    assert.match(await page.textContent('[data-testid=billing-return]'), /Payment received/);

    const get = async () => (await tally.get(`/v1/customers/${app.id}`)).json;
    const paid = await until(async () => { const c = await get(); return c.role === 'professional' && c; }, 'role after checkout');
    assert.equal(paid.plan, 'pro');
    assert.equal(paid.subscription.status, 'active');
    assert.match(paid.stripe_customer_id, /^cus_/);

    // A month later on the sandbox clock, the renewal invoice is paid and the role stays.
    const stripe = new Stripe('sk_test_walkthrough', { host: '127.0.0.1', port: tally.sandboxPort, protocol: 'http' });
    const periodEnd = paid.subscription.current_period_end;
    await stripe.testHelpers.testClocks.advance(tally.testClock, { frozen_time: periodEnd + 3600 });
    const renewed = await until(async () => { const c = await get(); return c.subscription.current_period_start === periodEnd && c; }, 'renewal');
    assert.equal(renewed.role, 'professional');
    const invoices = await stripe.invoices.list({ customer: paid.stripe_customer_id });
    assert.deepEqual(invoices.data.map((i) => [i.billing_reason, i.status, i.amount_paid]),
      [['subscription_cycle', 'paid', 6000], ['subscription_create', 'paid', 6000]]);

    // The portal: switch to scale, then cancel at period end.
    const portal = await tally.post('/v1/billing_portal_sessions', { customer: app.id });
    assert.equal(portal.status, 200, JSON.stringify(portal.json));
    await page.goto(portal.json.url);
    assert.equal(await page.textContent('[data-testid=card]'), 'visa •••• 4242');
    const scale = await page.$eval('[data-testid=price-select]', (s) => [...s.options].find((o) => o.dataset.lookupKey === 'scale_monthly').value);
    await page.selectOption('[data-testid=price-select]', scale);
    await page.click('[data-testid=update-plan]');
    await page.waitForSelector('[data-testid=notice]');
    await until(async () => (await get()).plan === 'scale', 'plan change from the portal');
    await page.click('[data-testid=cancel-plan]');
    await page.waitForSelector('[data-testid=renew]');
    await until(async () => (await get()).subscription.cancel_at_period_end === true, 'cancel at period end');
    assert.equal((await get()).role, 'professional');
    // Renew, then replace the card: a declining card is refused on the page, a good one becomes the default.
    // On the frozen test clock the cancel and the renew share one second and mirror each other; Tally orders
    // them by arrival (README "Event ordering", rule 3).
    await page.click('[data-testid=renew]');
    await page.waitForSelector('[data-testid=cancel-plan]');
    await until(async () => (await get()).subscription.cancel_at_period_end === false, 'renewed from the portal');
    await page.fill('#card_number', '4000 0000 0000 0002');
    await page.fill('#card_expiry', '12 / 34');
    await page.fill('#card_cvc', '123');
    await page.click('[data-testid=update-card]');
    assert.equal(await page.textContent('[data-testid=notice]'), 'Your card was declined.');
    await page.fill('#card_number', '5555 5555 5555 4444');
    await page.fill('#card_expiry', '12 / 34');
    await page.fill('#card_cvc', '123');
    await page.click('[data-testid=update-card]');
    await page.waitForURL(/notice=Payment/);
    assert.equal(await page.textContent('[data-testid=card]'), 'mastercard •••• 4444');
    const customer = await stripe.customers.retrieve(paid.stripe_customer_id);
    const pm = await stripe.paymentMethods.retrieve(customer.invoice_settings.default_payment_method);
    assert.equal(pm.card.last4, '4444');
  } finally {
    await page.close();
    await tally.stop();
  }
});

test('standalone sandbox: payment mode, 3-D Secure, cancel link and a failing trial card', async () => {
  const { child, stripe } = await startSandbox();
  const landing = createServer((req, res) => { res.end(`landed ${req.url}`); });
  await new Promise((r) => landing.listen(0, '127.0.0.1', r));
  const back = `http://127.0.0.1:${landing.address().port}`;
  const page = await browser.newPage();
  try {
    const bundle = await stripe.prices.create({ product_data: { name: '1,000 credits' }, currency: 'usd', unit_amount: 1000 });
    const pay = await stripe.checkout.sessions.create({ mode: 'payment', line_items: [{ price: bundle.id, quantity: 2 }],
      success_url: `${back}/ok?id={CHECKOUT_SESSION_ID}`, cancel_url: `${back}/cancel`, client_reference_id: 'user_9',
      payment_intent_data: { metadata: { credits: '2000' } } });
    assert.equal(pay.amount_total, 2000);
    const port = stripe.getApiField('port');
    assertStripeShape('checkout.session', await wireGet(port, `/v1/checkout/sessions/${pay.id}`));
    await page.goto(pay.url);
    await page.click('[data-testid=cancel]');
    await page.waitForURL(`${back}/cancel`);
    await page.goto(pay.url);
    await payWith(page, '4000 0027 6000 3184', { email: 'sca@example.com' });
    await page.waitForSelector('[data-testid=approve]');
    await page.click('[data-testid=approve]');
    await page.waitForURL(new RegExp(`${back}/ok\\?id=${pay.id}`));
    const done = await stripe.checkout.sessions.retrieve(pay.id);
    assert.equal(done.status, 'complete');
    assert.equal(done.payment_status, 'paid');
    assert.equal(done.customer_details.email, 'sca@example.com');
    const pi = await stripe.paymentIntents.retrieve(done.payment_intent);
    assert.equal(pi.status, 'succeeded');
    assert.equal(pi.metadata.credits, '2000');
    await page.goto(pay.url);
    assert.match(await page.textContent('[data-testid=session-status]'), /complete/);

    // A trial with a card that attaches but fails later charges: the trial starts, the conversion fails.
    const monthly = await stripe.prices.create({ product_data: { name: 'Pro' }, currency: 'usd', unit_amount: 6000, recurring: { interval: 'month' } });
    const trial = await stripe.checkout.sessions.create({ mode: 'subscription', line_items: [{ price: monthly.id, quantity: 1 }],
      success_url: `${back}/ok`, subscription_data: { trial_period_days: 7 } });
    await page.goto(trial.url);
    await payWith(page, '4000 0000 0000 0341', { email: 'trial@example.com' });
    await page.waitForURL(`${back}/ok`);
    const started = await stripe.checkout.sessions.retrieve(trial.id);
    assert.equal(started.payment_status, 'no_payment_required');
    const sub = await stripe.subscriptions.retrieve(started.subscription);
    assert.equal(sub.status, 'trialing');
    const events = (await stripe.events.list({ limit: 100 })).data.map((e) => e.type);
    assert.ok(events.includes('checkout.session.completed'));
    const portal = await stripe.billingPortal.sessions.create({ customer: sub.customer, return_url: `${back}/account` });
    assert.match(portal.url, /\/portal\/bps_/);
    assertStripeShape('billing_portal.session', portal);
    assertStripeShape('subscription', await wireGet(port, `/v1/subscriptions/${sub.id}`));
  } finally {
    await page.close();
    landing.close();
    child.kill('SIGTERM');
  }
});
