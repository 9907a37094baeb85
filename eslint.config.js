// ESLint 9 flat config: a small rule set, each rule here for a reason said
// next to it. The type checker (tsconfig.check.json, run first by `npm test`)
// already catches unused locals and imports, wrong types and implicit any; the
// rules below catch what it does not. Formatting beyond line length is left to
// the authors (STYLE.md).
//
// typescript-eslint needs TypeScript's JS API, which TypeScript 7 (the native
// `tsc` this project builds with) does not ship: package.json keeps the 6.0
// API as `typescript` (@typescript/typescript6) beside TypeScript 7 as
// `@typescript/native`, whose `tsc` is the one on PATH (typescript-eslint#10940).
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    // Generated, third-party or browser code: dist/ is tsc's output; public/ is
    // plain browser JavaScript outside this TypeScript project.
    ignores: ['dist/', 'node_modules/', 'public/', 'var/', 'machines/images/', 'test-artifacts/', 'bench/results/'],
  },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      // Type information for no-floating-promises: the same program tsc checks.
      parserOptions: { project: './tsconfig.check.json', tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      // A promise nobody awaits or catches turns its rejection into an
      // unhandledRejection, which ends the broker (Node >= 15) and every VM
      // it supervises with it; in a test it fails after the test has passed.
      // Mark a deliberate fire-and-forget with `void` and handle its errors.
      '@typescript-eslint/no-floating-promises': 'error',
      // Parameters too (tsc's noUnusedLocals covers locals and imports):
      // an unused argument is a caller's value silently ignored. A leading _
      // says "required by the interface, not needed here".
      '@typescript-eslint/no-unused-vars': ['error', {
        args: 'after-used', argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none',
        ignoreRestSiblings: true,
      }],
      // `any` switches the checker off for everything it touches; use
      // `unknown` and narrow (config, JSON and QMP replies all arrive untyped).
      '@typescript-eslint/no-explicit-any': 'error',
      // == coerces ('0' == 0, '' == 0); only `x == null`, which means null or
      // undefined, is allowed as the one idiom.
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      // STYLE.md: lines under 120 characters. Strings, template literals and
      // regular expressions count (a message is split with + at a space; a
      // long pattern becomes a named constant); only a line holding a URL does
      // not, as a URL cut in two can be neither clicked nor searched for.
      // max-len is frozen in ESLint 9, not removed; @stylistic/max-len is its
      // drop-in successor.
      'max-len': ['error', { code: 120, tabWidth: 2, ignoreUrls: true }],
      // STYLE.md: "spawn(file, argv) with arrays; never shell: true, never a
      // command string". exec/execSync run a command string through /bin/sh.
      'no-restricted-imports': ['error', {
        paths: [
          { name: 'node:child_process', importNames: ['exec', 'execSync'], message: 'spawn or execFile with an argv array' },
          { name: 'child_process', importNames: ['exec', 'execSync'], message: 'spawn or execFile with an argv array' },
        ],
      }],
      'no-restricted-syntax': ['error', {
        selector: 'Property[key.name="shell"][value.value=true]',
        message: 'never shell: true; pass an argv array',
      }],
    },
  },
);
