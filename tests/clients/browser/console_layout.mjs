// Every console page at phone width (390×844) and laptop width (1280×900), in headless
// Chromium: no horizontal scrolling, one h1 and a main landmark per page, an accessible name on
// every visible form field and on every image that is not hidden from assistive technology;
// the sign-in done by keyboard alone, and the main navigation reached by Tab with a visible
// focus style.
//
// Usage: CONSOLE_PASSWORD=… node console_layout.mjs --console URL --email EMAIL
//          --screenshots DIR --pages JSON [--segment-write-key KEY] [--chromium PATH]
//          [--timeout SECONDS]
//
// --pages is a JSON array of {"name": …, "path": …}: the pages to visit once signed in. With
// --segment-write-key, the Segment integration's Install form is also submitted with that key
// and the setup page it leads to is checked too.
//
// Prints one JSON line once done: {signIn, navFocus, pages: [{name, path, width, problems}],
// screenshots, problems}. Exits non-zero when any page has a problem, a page throws, or a request goes to
// another host; each problem is printed on stderr as `name (path) at WIDTHpx: problem`. Each
// page is saved as a screenshot at 390 px in DIR.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { chromium } from 'playwright-core'

const { values: args } = parseArgs({
  options: {
    console: { type: 'string' },
    email: { type: 'string' },
    screenshots: { type: 'string' },
    pages: { type: 'string' },
    'segment-write-key': { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60' },
  },
})
for (const required of ['console', 'email', 'screenshots', 'pages']) {
  if (!args[required]) {
    console.error(`console_layout.mjs: --${required} is required`)
    process.exit(2)
  }
}
const password = process.env.CONSOLE_PASSWORD
if (!password) {
  console.error('console_layout.mjs: set CONSOLE_PASSWORD')
  process.exit(2)
}
if (!existsSync(args.chromium)) {
  console.error(`console_layout.mjs: no Chromium at ${args.chromium}; install the Debian package chromium`)
  process.exit(2)
}
const base = new URL(args.console)
const timeout = Number.parseInt(args.timeout, 10) * 1000
const pages = JSON.parse(args.pages)
mkdirSync(args.screenshots, { recursive: true })

const PHONE = { width: 390, height: 844 }
const LAPTOP = { width: 1280, height: 900 }

const problems = []
const screenshots = []
const results = []
const profile = mkdtempSync(join(tmpdir(), 'signalbox-chromium-'))
let context
let exitCode = 0
let signIn = null
let navFocus = null

async function shot(page, name) {
  const path = join(args.screenshots, `layout-${String(screenshots.length + 1).padStart(2, '0')}-${name}.png`)
  await page.screenshot({ path, fullPage: true })
  screenshots.push(path)
}

// What the page itself can tell about its layout and its accessible names (run in the page).
function inspect() {
  const found = []
  const visible = (el) => {
    if (!el.checkVisibility({ checkOpacity: false, checkVisibilityCSS: true })) return false
    const box = el.getBoundingClientRect()
    return box.width > 0 || box.height > 0
  }
  const hiddenFromAT = (el) => el.closest('[aria-hidden="true"]') !== null
  const textOf = (ids) =>
    ids
      .split(/\s+/)
      .filter(Boolean)
      .map((id) => document.getElementById(id)?.textContent.trim() ?? '')
      .join(' ')
      .trim()
  const describe = (el) => {
    let text = el.tagName.toLowerCase()
    if (el.id) text += `#${el.id}`
    if (el.getAttribute('name')) text += `[name=${el.getAttribute('name')}]`
    if (el.classList.length) text += `.${[...el.classList].join('.')}`
    return text
  }

  const width = window.innerWidth
  const scrollWidth = document.documentElement.scrollWidth
  if (scrollWidth > width) {
    // Name the widest elements that stick out, outside containers that scroll on their own.
    // An element sticks out when its box, or the content overflowing its box, ends past the
    // viewport, unless a container that scrolls or clips it holds it (an absolutely positioned
    // element is held only by a positioned one).
    const culprits = []
    for (const el of document.body.querySelectorAll('*')) {
      if (!visible(el)) continue
      const box = el.getBoundingClientRect()
      const style = getComputedStyle(el)
      const contentRight = style.overflowX === 'visible' ? box.left + el.scrollWidth : box.right
      const right = Math.max(box.right, contentRight)
      if (right <= width + 0.5) continue
      const absolute = style.position === 'absolute' || style.position === 'fixed'
      let held = false
      for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
        const upStyle = getComputedStyle(up)
        if (absolute && upStyle.position === 'static') continue
        if (['auto', 'scroll', 'hidden', 'clip'].includes(upStyle.overflowX)) {
          held = true
          break
        }
      }
      if (!held) culprits.push(`${describe(el)} (right edge ${Math.round(right)}px)`)
    }
    found.push(`scrolls sideways: scrollWidth ${scrollWidth} > innerWidth ${width}; sticking out: ${culprits.slice(-5).join(', ') || 'nothing visible'}`)
  }

  const h1s = document.querySelectorAll('h1').length
  if (h1s !== 1) found.push(`${h1s} h1 elements (one expected)`)
  const mains = document.querySelectorAll('main, [role="main"]').length
  if (mains !== 1) found.push(`${mains} main landmarks (one expected)`)

  for (const field of document.querySelectorAll('input, select, textarea')) {
    if (field.type === 'hidden' || !visible(field) || hiddenFromAT(field)) continue
    const labelledBy = field.getAttribute('aria-labelledby')
    const named =
      (field.id && [...document.querySelectorAll('label[for]')].some((l) => l.htmlFor === field.id && l.textContent.trim())) ||
      (field.closest('label')?.textContent.trim() ?? '') !== '' ||
      (field.getAttribute('aria-label') ?? '').trim() !== '' ||
      (labelledBy && textOf(labelledBy) !== '') ||
      (['submit', 'button', 'reset'].includes(field.type) && field.value.trim() !== '')
    if (!named) found.push(`a field without an accessible name: ${describe(field)}`)
  }

  for (const image of document.querySelectorAll('img, svg')) {
    if (hiddenFromAT(image)) continue
    if (image.tagName.toLowerCase() === 'svg' && image.parentElement.closest('svg')) continue
    const labelledBy = image.getAttribute('aria-labelledby')
    const title = [...image.children].find((c) => c.tagName.toLowerCase() === 'title')
    const named =
      (image.getAttribute('aria-label') ?? '').trim() !== '' ||
      (labelledBy && textOf(labelledBy) !== '') ||
      (image.tagName.toLowerCase() === 'img' && image.hasAttribute('alt')) ||
      (title?.textContent.trim() ?? '') !== ''
    if (!named) found.push(`an image without an accessible name (and not aria-hidden): ${describe(image)}`)
  }
  return { scrollWidth, innerWidth: width, problems: found }
}

async function check(page, name, path, { screenshot }) {
  for (const viewport of [PHONE, LAPTOP]) {
    await page.setViewportSize(viewport)
    await page.goto(new URL(path, base).href)
    await page.waitForLoadState('load')
    if (new URL(page.url()).pathname === '/sign-in' && path !== '/sign-in') throw new Error(`${path} sent us to sign in again`)
    const report = await page.evaluate(inspect)
    const status = await page.evaluate(() => document.title)
    if (/^\d{3} /.test(status)) report.problems.push(`the page is an error: ${status}`)
    results.push({ name, path, width: viewport.width, ...report })
    for (const problem of report.problems) problems.push(`${name} (${path}) at ${viewport.width}px: ${problem}`)
    if (screenshot && viewport === PHONE) await shot(page, name)
  }
}

// Sign-in by keyboard alone: Tab to Email, type, Tab to Password, type, Enter.
async function signInByKeyboard(page) {
  await page.setViewportSize(PHONE)
  await page.goto(new URL('/', base).href)
  await page.waitForURL((url) => url.pathname === '/sign-in')
  const activeLabel = () =>
    page.evaluate(() => {
      const el = document.activeElement
      if (!el || !el.id) return el?.tagName.toLowerCase() ?? ''
      return document.querySelector(`label[for="${el.id}"]`)?.textContent.trim() ?? el.id
    })
  let tabs = 0
  while ((await activeLabel()) !== 'Email') {
    if (tabs === 10) throw new Error('ten Tabs did not reach the Email field')
    await page.keyboard.press('Tab')
    tabs += 1
  }
  await page.keyboard.type(args.email)
  await page.keyboard.press('Tab')
  if ((await activeLabel()) !== 'Password') throw new Error(`Tab after Email went to ${await activeLabel()}, not Password`)
  await page.keyboard.type(password)
  await Promise.all([page.waitForURL((url) => url.pathname === '/'), page.keyboard.press('Enter')])
  return { tabsToEmail: tabs, landed: new URL(page.url()).pathname }
}

// From the top of a page, Tab until a link of the main navigation has focus; its focus style.
async function tabToNav(page) {
  await page.setViewportSize(LAPTOP)
  await page.goto(new URL('/', base).href)
  let tabs = 0
  for (;;) {
    if (tabs === 10) throw new Error('ten Tabs did not reach the main navigation')
    await page.keyboard.press('Tab')
    tabs += 1
    const focus = await page.evaluate(() => {
      const el = document.activeElement
      if (!el?.closest('nav[aria-label="Main"]') || el.tagName !== 'A') return null
      const style = getComputedStyle(el)
      return {
        link: el.textContent.trim(),
        outline: `${style.outlineStyle} ${style.outlineWidth} ${style.outlineColor}`,
        outlineVisible: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
        boxShadow: style.boxShadow,
      }
    })
    if (focus) {
      if (!focus.outlineVisible && focus.boxShadow === 'none') problems.push(`the focused navigation link ${focus.link} shows no focus style`)
      await shot(page, 'nav-focus')
      return { tabs, ...focus }
    }
  }
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    viewport: LAPTOP,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  context.setDefaultTimeout(timeout)
  const page = context.pages()[0] ?? (await context.newPage())
  page.on('pageerror', (err) => problems.push(`page error on ${page.url()}: ${err.message}`))
  page.on('request', (req) => {
    if (new URL(req.url()).origin !== base.origin) problems.push(`request to another host: ${req.url()}`)
  })

  await check(page, 'sign-in', '/sign-in', { screenshot: true })
  signIn = await signInByKeyboard(page)
  navFocus = await tabToNav(page)
  await check(page, 'overview', '/', { screenshot: true })
  for (const { name, path } of pages) await check(page, name, path, { screenshot: true })

  if (args['segment-write-key']) {
    // Integrations › Segment › Install › Connect to Segment leads to the setup page.
    await page.setViewportSize(PHONE)
    await page.goto(new URL('/integrations/segment/install', base).href)
    await page.getByLabel('Write Key', { exact: true }).fill(args['segment-write-key'])
    await page.getByLabel('Endpoint', { exact: true }).fill(base.origin)
    await Promise.all([
      page.waitForURL((url) => url.pathname.endsWith('/setup')),
      page.getByRole('button', { name: 'Connect to Segment' }).click(),
    ])
    await check(page, 'segment-setup', new URL(page.url()).pathname, { screenshot: true })
  }
} catch (err) {
  problems.push(`${err.name}: ${err.message}`)
  try {
    const page = context?.pages()[0]
    if (page) await shot(page, 'failure')
  } catch {}
} finally {
  if (context) await context.close()
  rmSync(profile, { recursive: true, force: true })
}
console.log(JSON.stringify({ signIn, navFocus, pages: results, screenshots, problems }))
if (problems.length > 0) {
  for (const problem of problems) console.error(problem)
  exitCode = 1
}
process.exit(exitCode)
