// qwdctl completion bash: a completion script generated from the command tree,
// so it never falls out of step with the commands.
import type { Command } from 'commander';
import { CliContext, usage } from '../context.js';

export function bashCompletion(program: Command): string {
  const top = program.commands.map((c) => c.name());
  const cases = program.commands
    .filter((c) => c.commands.length > 0)
    .map((c) => `    ${c.name()}) words="${c.commands.map((s) => s.name()).join(' ')}" ;;`)
    .join('\n');
  return `# bash completion for qwdctl — install: qwdctl completion bash > /etc/bash_completion.d/qwdctl
_qwdctl() {
  local cur words noun i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  noun=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in -*) ;; *) noun="\${COMP_WORDS[i]}"; break ;; esac
  done
  if [[ "$cur" == -* ]]; then
    words="--help --json --config --state-dir --verbose --yes --all --dry-run"
  elif [[ -z "$noun" ]]; then
    words="${top.join(' ')}"
  else
    case "$noun" in
${cases}
    *) words="" ;;
    esac
  fi
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -F _qwdctl qwdctl
`;
}

export function registerCompletion(program: Command, ctx: CliContext): void {
  program.command('completion <shell>').description('print a shell completion script (bash)')
    .action((shell: string) => {
      if (shell !== 'bash') throw usage(`only bash completion is available, got ${JSON.stringify(shell)}`);
      ctx.print(bashCompletion(program));
    });
}
