"""Training monitor: loss curves, learning rate, previews over epochs, config and split; Generate panel.

Reads a run dir written by ``python -m ctdiff train``. While history.csv keeps changing the curves
refresh on their own; the Generate panel samples from the run's best checkpoint into
``<run>/samples/<sampler>-<steps>-seed<seed>/``, which the slice browser then shows.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from ctdiff.errors import CTDiffError
from ctdiff_app.monitor import (
    DEFAULT_SAMPLING,
    block_mean,
    find_checkpoint,
    is_active,
    list_previews,
    read_split,
    summarise_history,
)
from ctdiff_app.workspace import is_run_dir
from pages.components.data import load_history, load_sampling_defaults, mtime_ns
from pages.components.figures import loss_figure, lr_figure
from pages.components.paths import checked_path, os_problem
from pages.components.sampling import generate, sampler_names
from pages.components.state import (
    ensure_selection,
    go_to,
    keep,
    nav_link,
    no_data_message,
    page_setup,
    remember,
    short_path,
)

page_setup("Training monitor")
st.title("Training monitor")

ss = st.session_state
sel = ensure_selection()
run = sel["run_dir"]
if not run:
    no_data_message("training run dir")
    st.stop()
try:
    run = checked_path(run, "Training run dir")
    usable = is_run_dir(run)
except CTDiffError as exc:
    st.error(f"{exc} Choose another on Home.")
    st.stop()
except (OSError, ValueError) as exc:
    st.error(f"Training run dir: cannot be read ({os_problem(exc)}). Choose another on Home.")
    st.stop()
if not usable:
    st.error(
        f"{short_path(run)}: not a training run dir (no history.csv, config.yaml or checkpoints/). Choose another on Home."
    )
    st.stop()

st.caption(f"Run dir: `{short_path(run)}`")
history_path = run / "history.csv"
REFRESH_S = 10
live = is_active(history_path, within_s=120)


@st.fragment(run_every=REFRESH_S if live else None)
def curves() -> None:
    history, err = load_history(str(run))
    if err:
        st.error(err)
        return
    if history is None:
        st.info("No history.csv yet: training has not finished its first epoch.")
        return
    head = summarise_history(history)
    c = st.columns(5)
    c[0].metric("epochs", head["epochs"])
    c[1].metric("last train loss", f"{head['last_train_loss']:.4g}" if "last_train_loss" in head else "—")
    c[2].metric(
        "best val loss",
        f"{head['best_val_loss']:.4g}" if "best_val_loss" in head else "—",
        help=f"at epoch {head['best_epoch']}" if "best_epoch" in head else None,
    )
    c[3].metric(
        "training time",
        str(dt.timedelta(seconds=round(head["seconds"]))) if "seconds" in head else "—",
        help="wall time of all logged epochs together (training + validation), from history.csv",
    )
    c[4].metric(
        "time per epoch",
        f"{head['seconds_per_epoch']:.1f} s" if "seconds_per_epoch" in head else "—",
        help=(
            f"median epoch; the slowest took {head['slowest_epoch_seconds']:.1f} s"
            if "slowest_epoch_seconds" in head
            else None
        ),
    )
    c1, c2, c3 = st.columns(3)
    every = c1.number_input("Mean over epochs", min_value=1, max_value=500, step=1, key=keep("mean_every", 10))
    log_y = c2.checkbox("Log scale", key=keep("log_y", True))
    means = {col: block_mean(history, col, int(every)) for col in ("train_loss", "val_loss")}
    st.plotly_chart(loss_figure(history, means, int(every), log_y=log_y), key="loss")
    if "lr" in history.columns and history["lr"].notna().any():
        st.plotly_chart(lr_figure(history), key="lr")
    changed = dt.datetime.fromtimestamp(mtime_ns(history_path) / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    if live:
        c3.caption(
            f":green[:material/sync:] Training is running: refreshing every {REFRESH_S} s (history.csv changed {changed})."
        )
    else:
        c3.caption(f"Not running: history.csv last changed {changed}.")
    remember(["mean_every", "log_y"])


curves()

# ---------------------------------------------------------------------------------- previews
st.subheader("Preview samples over epochs")
previews = list_previews(run)
if not previews:
    st.info("No preview samples in previews/ yet.")
else:
    epochs = list(previews)
    if ss.get("preview_epoch") not in epochs:
        ss.pop("preview_epoch", None)
        ss.pop("_keep_preview_epoch", None)
    if len(epochs) > 1:
        epoch = st.select_slider("Epoch", options=epochs, key=keep("preview_epoch", epochs[-1]))
    else:
        epoch = epochs[0]
    st.image(str(previews[epoch]), caption=f"Preview sample after epoch {epoch} ({previews[epoch].name})", width=480)
    preview_volumes = sorted((run / "previews").glob("epoch_*.nii*"))
    if preview_volumes and st.button(
        f"Browse the {len(preview_volumes)} preview volumes in the slice browser", key="browse_previews"
    ):
        ss["generated_dir"] = str(run / "previews")
        go_to("pages/1_Slice_browser.py")

# ---------------------------------------------------------------------------- config and split
c1, c2 = st.columns(2)
with c1:
    st.subheader("Config")
    cfg = run / "config.yaml"
    if cfg.is_file():
        st.code(cfg.read_text(), language="yaml")
    else:
        st.info("No config.yaml in the run dir.")
with c2:
    st.subheader("Train / validation split")
    try:
        split = read_split(run)
    except CTDiffError as exc:
        st.error(str(exc))
        split = None
    if split is None:
        st.info("No split.json in the run dir.")
    else:
        train, val = list(split.get("train") or []), list(split.get("val") or [])
        st.markdown(f"seed **{split.get('seed', '?')}** · **{len(train)}** training, **{len(val)}** validation volumes")
        st.dataframe(
            {"set": ["train"] * len(train) + ["val"] * len(val), "file": train + val},
            hide_index=True,
            width="stretch",
            key="split_table",
        )

# ---------------------------------------------------------------------------------- generate
st.subheader("Generate")
checkpoint = find_checkpoint(run)
if checkpoint is None:
    st.info("No checkpoint yet (checkpoints/best.pt or last.pt): generation becomes available after the first save.")
else:
    st.caption(
        f"From `{short_path(checkpoint)}`; written to `{short_path(run / 'samples')}/<sampler>-<steps>-seed<seed>/`."
    )
    with st.form("generate"):
        c = st.columns(4)
        n = c[0].number_input("Volumes", min_value=1, max_value=64, value=2, step=1, key="gen_n")
        names = sampler_names(run)  # the samplers that fit the run's diffusion.kind
        default_sampler, default_steps = load_sampling_defaults(str(run))  # the run config's sample section
        if default_sampler not in names:
            default_sampler = DEFAULT_SAMPLING[0] if DEFAULT_SAMPLING[0] in names else names[0]
        sampler = c[1].selectbox("Sampler", names, key="gen_sampler", index=names.index(default_sampler))
        steps = c[2].number_input(
            "Steps", min_value=1, max_value=1000, value=min(default_steps, 1000), step=1, key="gen_steps"
        )
        seed = c[3].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="gen_seed")
        overwrite = st.checkbox("Overwrite existing samples with the same settings", key="gen_overwrite")
        submitted = st.form_submit_button("Generate", type="primary")
    if submitted:
        bar = st.progress(0.0, text="Loading the model…")

        def progress(done: int, total: int) -> None:
            bar.progress(min(done / total, 1.0) if total else 0.0, text=f"Sampling: step {done}/{total}")

        try:
            out = generate(
                run,
                checkpoint,
                n=int(n),
                sampler=sampler,
                steps=int(steps),
                seed=int(seed),
                overwrite=overwrite,
                progress=progress,
            )
        except CTDiffError as exc:
            bar.empty()
            st.error(str(exc))
        except ImportError as exc:
            bar.empty()
            st.error(f"Sampling is not available in this installation ({exc}).")
        else:
            bar.progress(1.0, text="Done")
            ss["generated_dir"] = str(out)
            st.success(
                f"Wrote {int(n)} volume(s) to {short_path(out)}; the slice browser now shows them as 'generated'."
            )
            nav_link("pages/1_Slice_browser.py", "Open the slice browser", ":material/radiology:")

remember(["preview_epoch"])
