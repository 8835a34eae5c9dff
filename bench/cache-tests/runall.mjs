// Runs one suite (SUITE=id) or all of http-cache-tests against BASE and
// prints the results as JSON, even when a test leaves a request hanging
// (the suite's own cli prints nothing then). Copied next to the suite's
// cli.mjs by run.sh.
import { runTests, getResults } from './client/runner.mjs'
import fetch from 'node-fetch'
import tests from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'

tests.push(surrogate)
process.on('exit', () => console.log(JSON.stringify(getResults(), null, 2)))
const selected = process.env.SUITE ? tests.filter(s => s.id === process.env.SUITE) : tests
await runTests(selected, fetch, false, process.env.BASE)
process.exit(0)
