"""The `analyzers` backend: ruff and bandit over the changed Python files, in a sandbox.

- sandbox: staging untrusted files, the clean environment, rlimits, the network probe, a
  bounded tool run;
- warm_pool: bandit kept warm (bandit_server.py is what runs inside that process);
- ruff, bandit: each tool's command line and output parsing;
- backend: AnalyzerParams and AnalyzerBackend.
"""

from ..filters import apply_filters, validate_filters
from .backend import AnalyzerBackend, AnalyzerParams
from .sandbox import ToolRun, no_network, run_tool, safe_relpath, stage_files

__all__ = ["AnalyzerBackend", "AnalyzerParams", "ToolRun", "apply_filters", "no_network",
           "run_tool", "safe_relpath", "stage_files", "validate_filters"]
