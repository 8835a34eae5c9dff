// Scores result files the way cache-tests.fyi does (kinds, dependencies)
// for the edge and for the peers whose results ship with the suite.
// usage: node compare.mjs RESULT.json... ; FAILS=1 lists the edge's misses.
import fs from 'fs'
import tests from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'
import { determineTestResult } from './lib/display.mjs'

tests.push(surrogate)
const ours = {}
for (const f of process.argv.slice(2)) {
  try { Object.assign(ours, JSON.parse(fs.readFileSync(f))) } catch (e) { console.error(`${f}: ${e.message}`) }
}
const impls = { outpost: ours }
for (const n of ['squid', 'nginx', 'varnish', 'trafficserver', 'apache', 'fastly']) {
  impls[n] = JSON.parse(fs.readFileSync(`results/${n}.json`))
}
const names = { '✅': 'pass', '⛔️': 'fail', '⚠️': 'optional fail', Y: 'check yes', N: 'check no', '🔹': 'setup fail', '⚪️': 'dependency fail', '↻': 'retry', '-': 'untested' }
const rows = []
const misses = []
for (const [impl, res] of Object.entries(impls)) {
  const count = {}
  for (const suite of tests) {
    for (const t of suite.tests) {
      if (t.browser_only) continue
      const symbol = determineTestResult(tests, t.id, res)[2]
      const name = names[symbol] || symbol
      count[name] = (count[name] || 0) + 1
      if (impl === 'outpost' && !['pass', 'check yes'].includes(name)) misses.push(`${name}: ${suite.id}/${t.id} ${JSON.stringify(res[t.id])}`)
    }
  }
  rows.push([impl, count])
}
const cols = ['pass', 'fail', 'optional fail', 'check yes', 'check no', 'setup fail', 'dependency fail', 'retry', 'untested']
console.log(`| cache | ${cols.join(' | ')} |`)
console.log(`|---|${cols.map(() => '---').join('|')}|`)
for (const [impl, count] of rows) console.log(`| ${impl} | ${cols.map(c => count[c] || 0).join(' | ')} |`)
if (process.env.FAILS) console.log('\n' + misses.join('\n'))
