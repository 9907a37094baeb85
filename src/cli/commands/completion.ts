// qwdctl completion bash: a completion script generated from the command tree,
// so it never falls out of step with the commands.
import type { Command } from 'commander';
import { CliContext, usage } from '../context.js';

/** Every option (of any command) that takes a value: its value is never the noun. */
function valueOptions(program: Command): string[] {
  const names = new Set<string>();
  const visit = (cmd: Command) => {
    for (const o of cmd.options) {
      if (!o.required && !o.optional) continue;
      if (o.long) names.add(o.long);
      if (o.short) names.add(o.short);
    }
    cmd.commands.forEach(visit);
  };
  visit(program);
  return [...names].sort();
}

/** qwdctl audit's filters, offered with the other options. */
const AUDIT_OPTIONS = '--since --until --user --session --kind --limit --before-id';

/** Words after a command that has no sub-commands but fixed first arguments. */
const ARGUMENT_WORDS: Record<string, string> = { edit: 'config machines', completion: 'bash' };

export function bashCompletion(program: Command): string {
  const top = program.commands.map((c) => c.name());
  const cases = [
    ...program.commands.filter((c) => c.commands.length > 0)
      .map((c) => `    ${c.name()}) words="${c.commands.map((s) => s.name()).join(' ')}" ;;`),
    ...Object.entries(ARGUMENT_WORDS).filter(([name]) => top.includes(name))
      .map(([name, words]) => `    ${name}) words="${words}" ;;`),
  ].join('\n');
  return `# bash completion for qwdctl — install: qwdctl completion bash > /etc/bash_completion.d/qwdctl
_qwdctl() {
  local cur words noun i nounAt
  cur="\${COMP_WORDS[COMP_CWORD]}"
  noun=""
  nounAt=0
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      ${valueOptions(program).join('|')}) ((i++)) ;; # the next word is this option's value
      -*) ;;
      *) noun="\${COMP_WORDS[i]}"; nounAt=$i; break ;;
    esac
  done
  if [[ "$cur" == -* ]]; then
    words="--help --json --config --state-dir --verbose --yes --all --dry-run ${AUDIT_OPTIONS}"
  elif [[ -z "$noun" ]]; then
    words="${top.join(' ')}"
  else
    # Only the word right after the noun is a verb; later words are arguments.
    for ((i = nounAt + 1; i < COMP_CWORD; i++)); do
      case "\${COMP_WORDS[i]}" in -*) ;; *) COMPREPLY=(); return ;; esac
    done
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
