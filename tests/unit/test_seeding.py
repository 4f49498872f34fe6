def test_deterministic_torch_switches_kernels_without_loading_the_compiler():
    """Every Flower deployment message is a fresh process: the switch must not import the torch
    compiler (2.5 s) just to set a flag nothing here reads."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from fdrmfl_pipeline.core.seeding import deterministic_torch\n"
        "deterministic_torch(2)\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert torch.get_num_threads() == 2\n"
        "assert 'torch._inductor.config' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
