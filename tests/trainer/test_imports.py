"""A training process loads only what training needs.

Each module below costs a training process 0.1-0.45 s of imports (pandas is
pulled in by pyarrow's numpy converters, and in the writer's thread it holds
the GIL mid-run; SQLAlchemy's objects also lengthen the interpreter's exit);
the dashboard, the CLI and notebooks load them when they query, and
migrations when a catalog needs one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NOT_FOR_TRAINING = ("duckdb", "pandas", "alembic", "sqlalchemy", "pyarrow.compute")


@pytest.mark.slow
def test_training_with_validation_and_a_test_loads_no_query_or_migration_modules(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
        from onthefly import Trainer

        torch.manual_seed(0)
        x, y = torch.randn(96, 4), torch.randint(0, 3, (96,))
        loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
        model = nn.Linear(4, 3)
        trainer = Trainer(project="imports", max_epochs=2, val_every_n_epochs=1, do_test_after=True,
                          home={str(tmp_path)!r}, progress=False)
        trainer.fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    loss_fn=nn.CrossEntropyLoss(), train_loader=loader, val_loader=loader, test_loader=loader)
        trainer.session.checkpoint()
        trainer.close()
        print(json.dumps(sorted(m for m in {list(NOT_FOR_TRAINING)!r} if m in sys.modules)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
