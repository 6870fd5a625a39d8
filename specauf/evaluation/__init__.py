"""Real τ of a drafter: the benchmark suite through the draft-and-verify loop, its statistics and tables."""

from specauf.evaluation.prompts import PromptTooLong, chat_prompt_ids, context_limit, run_conversation
from specauf.evaluation.stats import acceptance_stats, bench_result, flat_metrics
from specauf.evaluation.suite import evaluate_suite, greedy_mismatches, resolve_device
from specauf.evaluation.tables import header_line, log_results, markdown_report, print_table, write_reports

__all__ = [
    "PromptTooLong",
    "acceptance_stats",
    "bench_result",
    "chat_prompt_ids",
    "context_limit",
    "evaluate_suite",
    "flat_metrics",
    "greedy_mismatches",
    "header_line",
    "log_results",
    "markdown_report",
    "print_table",
    "resolve_device",
    "run_conversation",
    "write_reports",
]
