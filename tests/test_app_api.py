"""The studio through its API (``gradio_client``): generate, hot-swap (the pipeline is built once), LoRA weights,
seeds, video to video with ControlNets (their maps shown, their dropdowns swapping in place), training (finish and
cancel), inspect / convert / upload, and bad inputs that must not hurt the server."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from app_support import (
    CONTROLNETS,
    FAST,
    launch_studio,
    recipe_of,
    status_builds,
    write_clips,
    write_models_dir,
)

from motion_adapters.clips.export import read_frames, read_recipe

MAX_UPLOAD_MB = 1.0


@pytest.fixture(scope="module")
def server(shapes_env, tmp_path_factory):
    models = write_models_dir(tmp_path_factory.mktemp("models"))
    demo, url, studio = launch_studio(models, tmp_path_factory.mktemp("out"), max_upload_mb=MAX_UPLOAD_MB)
    yield url, studio, models
    studio.runner.cancel()
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def gen(client, **kw):
    args = {"base": "shapes-base", "motion": "shapes-motion", "prompt": "a red circle moving right", "seed": 1,
            "fmt": "webp", **FAST, **kw}
    return client.predict(**args, api_name="/generate")


def frames_of(result) -> np.ndarray:
    return read_frames(result[1])  # the download: lossless webp in these tests


def builds(client) -> int:
    return client.predict(api_name="/status")["builds"]


def test_generate_plays_downloads_and_records_the_recipe(client):
    result = gen(client, fmt="mp4", seed=7)
    preview, download, recipe_text, status, maps = result
    recipe = json.loads(recipe_text)
    assert recipe["seed"] == 7 and recipe["num_frames"] == 8 and recipe["base"]["name"] == "shapes-base"
    assert recipe["motion"]["name"] == "shapes-motion" and recipe["fps"] == 8
    clip = read_frames(download)
    assert clip.shape == (8, 32, 32, 3)
    shown = read_frames(preview)  # the page plays an upscaled mp4 of the same clip
    assert shown.shape[0] == 8 and min(shown.shape[1:3]) >= 256
    assert read_recipe(download)["seed"] == 7  # embedded in the file (and its sidecar)
    assert status_builds(status) == 1 and maps is None  # no ControlNets: no maps to show


def test_video_to_video_with_controlnets_shows_their_maps(client, tmp_path):
    from gradio_client import handle_file

    clip = handle_file(str(write_clips(tmp_path, 1)[0]))
    # strength 0.8 of 3 steps runs 2 (at 0.6 the one step left is at t=1, where no ControlNet can steer)
    v2v = gen(client, video=clip, strength=0.8)
    recipe = recipe_of(v2v)
    assert recipe["strength"] == 0.8 and recipe["video"]["path"] == "clip0.mp4" and recipe["controlnets"] == []
    assert read_recipe(v2v[1])["video"] == recipe["video"]  # embedded in the download
    assert not np.array_equal(frames_of(v2v), frames_of(gen(client)))
    steered = gen(client, video=clip, strength=0.8, controlnet_1=CONTROLNETS[0], control_1="canny",
                  controlnet_2=CONTROLNETS[1], controlnet_scale_2=0.5, control_2="maps", control_maps_2=clip,
                  control_start_2=0.2)
    assert not np.array_equal(frames_of(steered), frames_of(v2v))
    nets = recipe_of(steered)["controlnets"]
    assert [(c["scale"], c["start"], c["end"]) for c in nets] == [(1.0, 0.0, 1.0), (0.5, 0.2, 1.0)]
    assert nets[0]["control"] == {"preprocessor": "canny"} and nets[1]["control"]["path"] == "clip0.mp4"
    assert "gradio" not in steered[2] and str(tmp_path) not in steered[2]  # uploads named by their file name
    maps = read_frames(steered[4])  # what the two ControlNets followed, side by side
    assert maps.shape[0] == 8 and maps.shape[2] == 2 * maps.shape[1]
    assert f"`{CONTROLNETS[0]}`, `{CONTROLNETS[1]}`" in steered[3] and builds(client) == 1
    assert recipe_of(gen(client))["controlnets"] == []  # a text-to-video clip again
    assert client.predict(api_name="/status")["controlnets"] == []


def test_controlnet_dropdowns_load_and_unload_in_place(client, server):
    from gradio_client.exceptions import AppError

    studio, models = server[1], server[2]
    gen(client)  # the pipeline exists: a swap loads now

    def swap(**kw):
        return client.predict(base="shapes-base", motion="shapes-motion", **kw, api_name="/swap")

    assert f"ControlNets: `{CONTROLNETS[1]}`" in swap(controlnet_1=CONTROLNETS[1])
    assert studio.gen.controlnets == [str((models / CONTROLNETS[1]).resolve())]
    assert f"`{CONTROLNETS[1]}`, `{CONTROLNETS[0]}`" in swap(controlnet_1=CONTROLNETS[1], controlnet_2=CONTROLNETS[0])
    assert len(studio.gen.controlnets) == 2
    with pytest.raises(AppError, match="ControlNet 'loras/strong-lora.safetensors': expected one of the ControlNets"):
        swap(controlnet_1="loras/strong-lora.safetensors")
    assert len(studio.gen.controlnets) == 2  # a refused swap changes nothing
    assert "ControlNets: none" in swap() and studio.gen.controlnets == []
    assert builds(client) == 1


def test_swaps_happen_in_place_and_change_the_output(client):
    ref = frames_of(gen(client))
    strong = gen(client, motion="strong-motion.safetensors")
    assert not np.array_equal(frames_of(strong), ref)
    assert recipe_of(strong)["motion"]["path"].endswith("strong-motion.safetensors")
    none = gen(client, motion="none")
    assert recipe_of(none)["motion"]["name"] == "none"
    other_base = gen(client, base="bases/perturbed-base")
    assert not np.array_equal(frames_of(other_base), ref)
    assert np.array_equal(frames_of(gen(client)), ref)  # back to the first models: the same clip again
    # the dropdowns' change event swaps without generating
    status = client.predict(base="shapes-navy", motion="none", api_name="/swap")
    assert "shapes-navy" in status and "`none`" in status
    assert builds(client) == 1
    st = client.predict(api_name="/status")
    assert st["base"] == "shapes-navy" and st["motion"] == "none"


def test_lora_weight_zero_is_no_lora_and_one_changes_the_clip(client):
    lora = "loras/strong-lora.safetensors"
    plain = frames_of(gen(client))
    zero = frames_of(gen(client, lora_1=lora, weight_1=0.0))
    one = gen(client, lora_1=lora, weight_1=1.0)
    assert np.array_equal(zero, plain)
    assert not np.array_equal(frames_of(one), plain)
    assert [lo["weight"] for lo in recipe_of(one)["loras"]] == [1.0]
    half = gen(client, lora_1=lora, weight_1=0.5, lora_2="shapes-zoom-lora", weight_2=1.0)  # two stacked
    assert len(recipe_of(half)["loras"]) == 2
    assert np.array_equal(frames_of(gen(client)), plain)  # removed again: the plain clip
    assert builds(client) == 1


def test_random_seed_is_recorded_and_reproduces(client):
    a, b = gen(client, seed=-1), gen(client, seed=-1)
    sa, sb = recipe_of(a)["seed"], recipe_of(b)["seed"]
    assert sa != sb
    assert np.array_equal(frames_of(gen(client, seed=sa)), frames_of(a))


def test_prompt_travel_and_long_clip_options(client):
    travel = gen(client, prompt="0: a red circle\n4: a blue square", frames=8, context_length=4, context_overlap=1,
                 motion_strength=0.5, scheduler="euler")
    recipe = recipe_of(travel)
    assert recipe["prompt"] == {"0": "a red circle", "4": "a blue square"}
    assert recipe["context_length"] == 4 and recipe["scheduler"] == "euler" and recipe["motion_strength"] == 0.5


@pytest.mark.parametrize("kw, message", [
    ({"base": "/etc/passwd"}, "models directories"),
    ({"motion": "../strong-motion.safetensors"}, "models directories"),
    ({"lora_1": "/tmp/x.safetensors"}, "models directories"),
    ({"base": "strong-motion.safetensors"}, "found a motion"),
    ({"frames": 0}, "Frames"),
    ({"frames": 2.5}, "Frames"),
    ({"width": 36}, "multiple of 8"),
    ({"steps": 100000}, "Steps"),
    ({"guidance": -1}, "minimum"),
    ({"scheduler": "nope"}, "choices"),
    ({"prompt": "   "}, "Prompt"),
    ({"prompt": "0: a\nfive: b"}, "FRAME: text"),
    ({"fmt": "exe"}, "choices"),
    ({"lora_1": "loras/strong-lora.safetensors", "weight_1": 99}, "maximum"),
    ({"controlnet_1": CONTROLNETS[0]}, "ControlNet 1 control: expected a Video to compute canny maps from"),
    ({"controlnet_1": CONTROLNETS[0], "control_1": "maps"}, "ControlNet 1 maps: expected uploaded control maps"),
    ({"controlnet_1": CONTROLNETS[0], "controlnet_scale_1": 5}, "maximum"),
    ({"controlnet_1": CONTROLNETS[0], "control_1": "depth"}, "choices"),
    ({"controlnet_1": CONTROLNETS[0], "control_start_1": 0.5, "control_end_1": 0.5}, "ControlNet 1 start/end"),
])
def test_bad_inputs_give_clear_errors_and_the_server_keeps_serving(client, kw, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        gen(client, **kw)
    assert client.predict(api_name="/status")["busy"] is None


def test_a_failed_swap_leaves_the_pipeline_as_it_was(client, server):
    studio = server[1]
    gen(client)
    before = studio.gen.state_fingerprint()
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="base"):  # a LoRA file offered as a base
        gen(client, base="loras/strong-lora.safetensors")
    assert studio.gen.state_fingerprint() == before
    assert recipe_of(gen(client))["base"]["name"] == "shapes-base"


def test_uploads_are_checked(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    wrong = tmp_path / "notes.txt"
    wrong.write_text("hello")
    with pytest.raises(AppError, match="safetensors"):
        client.predict(file=handle_file(str(wrong)), api_name="/inspect_upload")
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * int(MAX_UPLOAD_MB * 2 * 2**20))
    with pytest.raises(Exception, match="(?i)large|size|exceed"):
        client.predict(file=handle_file(str(big)), api_name="/inspect_upload")
    assert client.predict(api_name="/status")["busy"] is None


def test_a_refused_pickle_is_named_by_its_upload_name_only(client, tmp_path):
    """The refusal of a .ckpt that would run code shows the file's own name, never gradio's upload folder."""
    import pickle

    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    class Evil:
        def __reduce__(self):
            return (print, ("never run",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {"w": Evil()}}, protocol=2))
    for api_name in ("/inspect_upload", "/add_model"):
        with pytest.raises(AppError) as e:
            client.predict(file=handle_file(str(evil)), api_name=api_name)
        message = str(e.value)
        assert "evil.ckpt: expected a pickle of plain tensors" in message, message
        assert "/evil.ckpt" not in message and "gradio" not in message and str(tmp_path) not in message


def test_inspect_convert_and_add_a_model(client, server, tmp_path):
    from gradio_client import handle_file

    text, report = client.predict(name="shapes-motion", api_name="/inspect")
    assert "motion_module" in text and json.loads(report)["kind"] == "motion_module"
    text, _ = client.predict(name="datasets/squares", api_name="/inspect")
    assert "clip0.mp4" in text
    message, *_ = client.predict(name="strong-motion.safetensors", to="original", out_name="",
                                 api_name="/convert")
    assert "converted/strong-motion-original.safetensors" in message
    models = client.predict(api_name="/models")
    assert "converted/strong-motion-original.safetensors" in models["motion"]
    assert "notes.txt" not in str(models) and "junk.safetensors" not in str(models)
    text, _ = client.predict(name="converted/strong-motion-original.safetensors", api_name="/inspect")
    assert "original" in text
    copy = tmp_path / "my-lora.safetensors"
    copy.write_bytes((server[2] / "loras" / "strong-lora.safetensors").read_bytes())
    text, report = client.predict(file=handle_file(str(copy)), api_name="/inspect_upload")
    assert json.loads(report)["kind"] == "motion_lora"
    client.predict(file=handle_file(str(copy)), api_name="/add_model")
    assert "uploads/my-lora.safetensors" in client.predict(api_name="/models")["lora"]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="converts to"):
        client.predict(name="shapes-base", to="kohya", out_name="", api_name="/convert")


def train_args(clips, **kw):
    from gradio_client import handle_file

    return {"preset": "motion_lora", "base": "shapes-base", "motion": "shapes-motion",
            "clips": [handle_file(str(c)) for c in clips], "captions": "a red square moving right",
            "dataset": "", "steps": 2, "lr": 1e-3, "rank": 4, "batch_size": 1, "frames": 8, "stride": 1,
            "resolution": 32, "use_8bit": True, "gradient_checkpointing": True, "sample_prompt": "a red square",
            "sample_every": 1, "sample_steps": 2, **kw}


def test_train_a_motion_lora_from_uploaded_clips(client, server, tmp_path):
    clips = write_clips(tmp_path / "clips", 2)
    started = client.predict(**train_args(clips, name="squares"), api_name="/train_start")
    assert "squares" in started and "gradient checkpointing: on" in started
    job = client.submit(api_name="/train_progress")
    updates = list(job)  # streams until the child process exits
    final = job.result()
    progress = final[0]
    assert "finished" in progress, progress + "\n" + str(final[4])
    assert "trained/squares/motion_lora.safetensors" in progress
    assert "step 2/2" in progress and len(updates) >= 1
    assert "used:" in progress and "gradient checkpointing on" in progress
    assert "train motion_lora" in final[4] and "2/2" in final[4], final[4]  # the trainer's progress, streamed
    samples = final[3]
    assert samples, "no sample clips streamed"
    loras = client.predict(api_name="/models")["lora"]
    assert "trained/squares/motion_lora.safetensors" in loras
    out = gen(client, lora_1="trained/squares/motion_lora.safetensors", weight_1=1.0)
    assert recipe_of(out)["loras"][0]["path"].endswith("motion_lora.safetensors")
    assert builds(client) == 1
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="exists"):  # the name is taken now
        client.predict(**train_args(clips, name="squares"), api_name="/train_start")
    with pytest.raises(AppError, match="Captions"):
        client.predict(**train_args(clips, name="other", captions="one\ntwo\nthree"), api_name="/train_start")


def test_generation_waits_for_nothing_while_training_and_cancel_frees_the_device(client, server, tmp_path):
    from gradio_client.exceptions import AppError

    studio = server[1]
    clips = write_clips(tmp_path / "clips", 1)
    client.predict(**train_args(clips, name="long", steps=100000, sample_prompt=""), api_name="/train_start")
    assert client.predict(api_name="/status")["busy"] == "training"
    t0 = time.perf_counter()
    with pytest.raises(AppError, match="training job is running"):
        gen(client)
    assert time.perf_counter() - t0 < 30  # an immediate, clear refusal, not a wait
    message = client.predict(api_name="/train_cancel")
    assert "cancelled" in message
    assert studio.runner.job.state == "cancelled" and studio.gate.owner is None
    assert client.predict(api_name="/status")["training"]["state"] == "cancelled"
    assert recipe_of(gen(client))["base"]["name"] == "shapes-base"
    assert "long" not in " ".join(client.predict(api_name="/models")["lora"])
