"""`w4rl data view`: an HTML page of a store's episodes, written whole."""

from __future__ import annotations

from typer.testing import CliRunner

from pipelines.cli import app


def test_view_page_has_each_episode_with_gif_grid_and_plots(tiny_store, tmp_path):
    out = tmp_path / "view"
    result = CliRunner().invoke(app, ["data", "view", tiny_store.url, "--out", str(out), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert f"2 of {tiny_store.n_episodes} episodes" in result.output
    page = (out / "index.html").read_text()
    for i in range(2):
        assert f'src="episode{i}.gif"' in page and f'src="episode{i}_grid.png"' in page
        assert (out / f"episode{i}.gif").stat().st_size > 0 and (out / f"episode{i}_grid.png").stat().st_size > 0
    assert "episode 2:" not in page and page.count("<polyline") == 2 * tiny_store.layout.action_dim
    assert not list(tmp_path.glob(".view.tmp-*"))


def test_view_of_a_missing_store_fails_cleanly_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(app, ["data", "view", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "v")])
    assert result.exit_code == 1 and "nope.zarr" in result.output
    assert not (tmp_path / "v").exists()
