"""What every CultureCLIP command shares about faults: one error path (a line naming what is wrong and exit status
2/1/3 instead of a traceback), atomic file and folder writes, output-folder guards, weights-only loading and a
start-up rendezvous with a short timeout for multi-process runs.

The base of the data flow: it imports no other package of the project (torch, huggingface_hub, yaml and the
other libraries only where a function needs them), so dataset_builder, cultureclip_training, evaluate_suite,
cultureclip_reproduce and cultureclip_demo can all use it. Not part of `modeling_cultureclip` (Hub remote code).
"""

from .errors import (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILURE, BadInput, CommandError, Diverged, RunFailure,
                     describe, run_command)
from .files import (atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, load_weights_only,
                    read_json, read_yaml)
from .outputs import OutputInUse, describe_folder, refuse_foreign
from .rendezvous import RendezvousTimeout, file_rendezvous, rendezvous_timeout_s, store_rendezvous

__all__ = ["BadInput", "CommandError", "Diverged", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_FAILURE", "OutputInUse",
           "RendezvousTimeout", "RunFailure", "atomic_dir", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "describe", "describe_folder", "file_rendezvous", "load_weights_only", "read_json",
           "read_yaml", "refuse_foreign", "rendezvous_timeout_s", "run_command", "store_rendezvous"]
