import test from 'ava';
import { describeValue } from '../src/describe-value.js';

const deepArray = JSON.parse('['.repeat(10000) + ']'.repeat(10000)) as unknown;
const deepObject = JSON.parse('{"a":'.repeat(10000) + '1' + '}'.repeat(10000)) as unknown;

const cases: Array<[string, unknown, number, string | RegExp]> = [
  ['a number', 42, 80, '42'],
  ['a short string', 'abc', 80, '"abc"'],
  ['a string with quotes and newlines', 'a"b\nc', 80, '"a\\"b\\nc"'],
  ['a long string', 'x'.repeat(10000), 40, /^"x+\.\.\.$/],
  ['null', null, 80, 'null'],
  ['nothing', undefined, 80, 'nothing'],
  ['a flat array', [1, 'a', true], 80, '[1, "a", true]'],
  ['a long array', Array.from({ length: 100 }, (_, i) => i), 80, '[0, 1, 2, 3, 4, 5, 6, 7, ... (100 items)]'],
  ['a nested array', [[1], { a: 1 }], 80, '[[...], {...}]'],
  ['10,000 nested arrays', deepArray, 80, '[[...]]'],
  ['10,000 nested objects', deepObject, 80, '{"a": {...}}'],
  ['an object with many keys', Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])), 200, /\.\.\. \(20 keys\)\}$/],
];

for (const [title, value, max, expected] of cases) {
  test(`describeValue: ${title}`, (t) => {
    const text = describeValue(value, max);
    t.true(text.length <= max, `${text.length} > ${max}`);
    if (typeof expected === 'string') t.is(text, expected);
    else t.regex(text, expected);
  });
}
