"""How pushed files reach the Hub: the LFS path and the Xet path of `iamm.hub.push.upload`, against the local Hub
server (tests/helpers/hub_server.py) in its `lfs` and `xet` modes, and what a failing step gives.

`huggingface_hub` uploads through Xet whenever `hf_xet` is importable (the default); the LFS path is the one it takes
without it (`HF_HUB_DISABLE_XET`), and the one every LFS-only server needs. Only tiny folders: a binary
`model.safetensors`, a binary `data/train.parquet` and two text files.
"""

import hashlib
import json
import os
import random
import shutil
import urllib.error
import urllib.request

import pytest

from iamm.hub.push import MANIFEST
from tests.helpers.hub_server import APPLY_THEN_DROP, DROP, FakeHub, LfsPointer, git_blob_sha1

try:
    import hf_xet  # noqa: F401

    HAS_XET = True
except ImportError:
    HAS_XET = False
needs_xet = pytest.mark.skipif(not HAS_XET, reason="hf_xet is not installed: huggingface_hub cannot take the Xet path")

BINARY = ("model.safetensors", "data/train.parquet")
pytestmark = pytest.mark.filterwarnings("ignore:It seems that you are about to commit a data file:UserWarning")


@pytest.fixture
def staging(tmp_path):
    """A staged folder: two binary files the Hub keeps in LFS/Xet storage, two small text files."""
    folder = tmp_path / "staging"
    (folder / "data").mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [700], "data_offsets": [0, 2800]}}).encode()
    noise = random.Random(0).randbytes  # incompressible, so the CAS must receive about as many bytes
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + noise(2800))
    (folder / "data" / "train.parquet").write_bytes(b"PAR1" + noise(2300) + b"PAR1")
    (folder / "config.json").write_text(json.dumps({"model_type": "iamm", "hidden_size": 8}))
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    return folder


def local_files(folder):
    return {os.path.relpath(os.path.join(r, n), folder).replace(os.sep, "/"): open(os.path.join(r, n), "rb").read()
            for r, _, names in os.walk(folder) for n in names}


def start_hub(request, transfer):
    hub = FakeHub(transfer=transfer).start()
    request.addfinalizer(hub.stop)
    return hub


@pytest.fixture
def online(monkeypatch):
    """The session is offline (conftest); lift that for the local server only."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


@pytest.fixture
def lfs_client(online):
    """huggingface_hub without Xet: the LFS batch API path."""
    import huggingface_hub.constants

    online.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def xet_client(online):
    import huggingface_hub.constants

    online.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)


def push_args(hub, repo_id, folder):
    from iamm.hub.push import PushArguments

    return PushArguments(kind="model", folder=str(folder), repo_id=repo_id, endpoint=hub.endpoint,
                         token="hf_test_token")


def upload(hub, repo_id, folder):
    from iamm.hub.push import upload as push_upload

    return push_upload(push_args(hub, repo_id, folder), str(folder))["commit"]


# ---- the LFS path ---------------------------------------------------------------------------------------------
def test_lfs_push_round_trips_byte_exact(request, lfs_client, staging, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    hub = start_hub(request, "lfs")
    local = local_files(staging)
    commit = upload(hub, "org/lfs", staging)

    # the binary files went through the batch API and a PUT each, the text files inline
    puts = [r for r in hub.requests if r.startswith("PUT storage:/lfs/")]
    assert "POST /org/lfs.git/info/lfs/objects/batch" in hub.requests and len(puts) == 2
    pointers = hub.lfs_files("org/lfs")
    assert set(pointers) == set(BINARY)
    for path in BINARY:
        assert pointers[path].sha256 == hashlib.sha256(local[path]).hexdigest() and pointers[path].xet_hash is None
        assert hub.lfs_objects[pointers[path].sha256] == local[path]
    files = hub.files("org/lfs")
    assert {p: files[p] for p in local} == local and set(files) == set(local) | {".gitattributes", MANIFEST}

    # the tree lists LFS files with their sha256; downloads (302 to storage, X-Linked-*) give the same bytes
    api = HfApi(endpoint=hub.endpoint, token="hf_test_token")
    tree = {e.path: e for e in api.list_repo_tree("org/lfs", recursive=True) if hasattr(e, "lfs")}
    for path in BINARY:
        assert tree[path].lfs.sha256 == pointers[path].sha256 and tree[path].lfs.size == len(local[path])
        assert tree[path].blob_id == git_blob_sha1(pointers[path].pointer)
    assert tree["config.json"].lfs is None and tree["config.json"].blob_id == git_blob_sha1(local["config.json"])
    for path, data in local.items():
        downloaded = hf_hub_download("org/lfs", path, endpoint=hub.endpoint, token="hf_test_token",
                                     cache_dir=str(tmp_path / "cache"))
        assert open(downloaded, "rb").read() == data, path
    assert any(r.startswith("GET storage:/lfs/") for r in hub.requests)  # followed the redirect off the Hub

    # pushing the same folder again uploads nothing and makes no commit (the Hub compares sha256 for LFS files)
    count, puts_before = hub.commit_count("org/lfs"), len(puts)
    assert upload(hub, "org/lfs", staging) == commit
    assert hub.commit_count("org/lfs") == count
    assert len([r for r in hub.requests if r.startswith("PUT storage:/lfs/")]) == puts_before


def _call(method, url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_lfs_server_refuses_what_the_hub_refuses(request, staging):
    """The server can fail us: a PUT of other bytes than announced, a commit naming an object never uploaded, a
    binary file sent inline."""
    import base64

    hub = start_hub(request, "lfs")
    with hub.lock:
        hub.create_repo("model", "org/strict", False)
    data = (staging / "model.safetensors").read_bytes()
    oid, auth = hashlib.sha256(data).hexdigest(), {"Authorization": "Bearer hf_test_token"}
    batch = json.dumps({"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                        "objects": [{"oid": oid, "size": len(data)}]}).encode()
    lfs_headers = dict(auth, **{"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"})
    status, body = _call("POST", f"{hub.endpoint}/org/strict.git/info/lfs/objects/batch", batch, lfs_headers)
    assert status == 200
    answer = json.loads(body)
    assert answer["transfer"] == "basic"
    href = answer["objects"][0]["actions"]["upload"]["href"]
    assert href.startswith(hub.storage_endpoint) and "verify" in answer["objects"][0]["actions"]
    assert _call("PUT", href, data[:-1] + b"x")[0] == 400  # same size, other content
    assert _call("PUT", href, data + b"x")[0] == 400  # other size
    assert _call("PUT", href.replace("sig=", "sig=0"), data)[0] == 403  # not the signed URL
    assert not hub.lfs_objects

    def commit(*lines):
        body = "\n".join(json.dumps(line) for line in
                         [{"key": "header", "value": {"summary": "s", "description": ""}}, *lines]).encode()
        return _call("POST", f"{hub.endpoint}/api/models/org/strict/commit/main", body,
                     dict(auth, **{"Content-Type": "application/x-ndjson"}))

    lfs_line = {"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": oid, "size": len(data)}}
    readme = {"key": "file", "value": {"path": "README.md", "content": base64.b64encode(b"# x\n").decode(),
                                       "encoding": "base64"}}
    status, body = commit(readme, lfs_line)
    assert status == 422 and b"does not exist" in body
    inline = {"key": "file", "value": {"path": "model.safetensors", "content": base64.b64encode(data).decode(),
                                       "encoding": "base64"}}
    assert commit(inline)[0] == 400
    assert hub.commit_count("org/strict") == 1 and set(hub.files("org/strict")) == {".gitattributes"}  # all or nothing

    assert _call("PUT", href, data)[0] == 200
    assert _call("POST", answer["objects"][0]["actions"]["verify"]["href"],
                 json.dumps({"oid": oid, "size": len(data)}).encode(), lfs_headers)[0] == 200
    assert commit(readme, lfs_line)[0] == 200
    assert hub.files("org/strict")["model.safetensors"] == data
    status, body = _call("POST", f"{hub.endpoint}/org/strict.git/info/lfs/objects/batch", batch, lfs_headers)
    assert "actions" not in json.loads(body)["objects"][0]  # already stored: nothing to upload


# ---- the Xet path ----------------------------------------------------------------------------------------------
@needs_xet
def test_xet_push_commits_sha256_oids_and_the_cas_received_the_data(request, xet_client, staging, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    hub = start_hub(request, "xet")
    local = local_files(staging)
    upload(hub, "org/xet", staging)

    assert any(r.startswith("GET /api/models/org/xet/xet-write-token/main") for r in hub.requests)
    assert not any("lfs/objects/batch" in r for r in hub.requests)  # Xet replaces the LFS batch API
    assert hub.xorbs and sum(map(len, hub.xorbs.values())) >= sum(len(local[p]) for p in BINARY)
    assert hub.shards and not hub.unhandled
    pointers = hub.lfs_files("org/xet")
    assert set(pointers) == set(BINARY)
    for path in BINARY:
        sha = hashlib.sha256(local[path]).hexdigest()
        assert pointers[path].sha256 == sha and pointers[path].size == len(local[path])
        assert hub.xet_files[sha].xet_hash == pointers[path].xet_hash  # registered by a shard the CAS received
    files = hub.files("org/xet")
    assert files["config.json"] == local["config.json"] and isinstance(files["model.safetensors"], LfsPointer)

    api = HfApi(endpoint=hub.endpoint, token="hf_test_token")
    tree = {e.path: e for e in api.list_repo_tree("org/xet", recursive=True) if hasattr(e, "lfs")}
    assert tree["model.safetensors"].lfs.sha256 == pointers["model.safetensors"].sha256
    assert tree["model.safetensors"].xet_hash == pointers["model.safetensors"].xet_hash
    # the server does not reconstruct Xet files: it says so rather than serve something else
    with pytest.raises(Exception) as err:
        hf_hub_download("org/xet", "model.safetensors", endpoint=hub.endpoint, token="hf_test_token",
                        cache_dir=str(tmp_path / "cache"))
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("501" in m and "does not reconstruct Xet files" in m for m in chain), chain
    config = hf_hub_download("org/xet", "config.json", endpoint=hub.endpoint, token="hf_test_token",
                             cache_dir=str(tmp_path / "cache"))
    assert open(config, "rb").read() == local["config.json"]


@needs_xet
def test_xet_server_refuses_a_commit_naming_content_no_shard_registered(request, xet_client, staging, monkeypatch):
    """The commit's sha256 oids are checked against the files the CAS's shards registered."""
    import tests.helpers.hub_server as server
    from iamm.hub.push import PushError

    hub = start_hub(request, "xet")
    monkeypatch.setattr(server, "parse_shard", lambda data: [])  # shards taken, their files not registered
    with pytest.raises(PushError, match="422"):
        upload(hub, "org/xet-unregistered", staging)
    assert hub.xorbs and hub.shards and hub.commit_count("org/xet-unregistered") == 1


@needs_xet
def test_default_client_against_an_lfs_only_server_gives_a_clear_error(request, xet_client, staging):
    from iamm.hub.push import PushError

    hub = start_hub(request, "lfs")
    with pytest.raises(PushError, match="model.safetensors"):
        upload(hub, "org/lfs-only", staging)
    assert hub.commit_count("org/lfs-only") == 1


# ---- failing steps ---------------------------------------------------------------------------------------------
LFS_FAILURES = [
    pytest.param("preupload", 403, id="preupload"),
    pytest.param("lfs-batch", 403, id="lfs-batch"),
    pytest.param("lfs-upload", 403, id="lfs-put"),
    pytest.param("lfs-verify", 403, id="lfs-verify"),
    pytest.param("commit", 403, id="commit"),
    pytest.param("commit", DROP, id="commit-dropped"),
]
XET_FAILURES = [
    pytest.param("preupload", 403, id="preupload"),
    pytest.param("xet-write-token", 403, id="xet-write-token"),
    pytest.param("xet-xorb", 403, id="xorb"),
    pytest.param("xet-shard", 403, id="shard"),
    pytest.param("commit", 403, id="commit"),
]


def _fails_cleanly(hub, repo_id, staging, endpoint, status):
    from iamm.hub.push import PushError

    with hub.lock:
        hub.create_repo("model", repo_id, False)
    before = hub.files(repo_id)
    hub.fail_next(endpoint, status=status)
    with pytest.raises(PushError) as err:
        upload(hub, repo_id, staging)
    assert "model.safetensors" in str(err.value)  # names what is not on the Hub
    assert hub.commit_count(repo_id) == 1 and hub.files(repo_id) == before  # nothing half-done
    assert not hub.failures[endpoint]  # the failure was reached


@pytest.mark.parametrize("endpoint,status", LFS_FAILURES)
def test_a_failing_lfs_step_gives_a_push_error(request, lfs_client, staging, endpoint, status):
    _fails_cleanly(start_hub(request, "lfs"), "org/lfs-fail", staging, endpoint, status)


@needs_xet
@pytest.mark.parametrize("endpoint,status", XET_FAILURES)
def test_a_failing_xet_step_gives_a_push_error(request, xet_client, staging, endpoint, status):
    _fails_cleanly(start_hub(request, "xet"), "org/xet-fail", staging, endpoint, status)


@pytest.mark.parametrize("transfer,endpoint", [
    ("lfs", "lfs-batch"), ("lfs", "lfs-upload"), ("lfs", "lfs-verify"),
    pytest.param("xet", "xet-write-token", marks=needs_xet), pytest.param("xet", "xet-xorb", marks=needs_xet),
    pytest.param("xet", "xet-shard", marks=needs_xet), pytest.param("xet", "commit", marks=needs_xet),
])
def test_one_dropped_connection_is_retried(request, online, staging, transfer, endpoint):
    import huggingface_hub.constants

    online.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", transfer == "lfs")
    hub = start_hub(request, transfer)
    hub.fail_next(endpoint, status=DROP)
    commit = upload(hub, "org/dropped", staging)
    assert not hub.failures[endpoint]
    assert hub.repo("org/dropped").branches["main"] == commit and hub.commit_count("org/dropped") == 2
    assert set(hub.lfs_files("org/dropped")) == set(BINARY)


@pytest.mark.parametrize("transfer", ["regular", "lfs", pytest.param("xet", marks=needs_xet)])
def test_a_commit_whose_answer_was_lost(request, online, staging, transfer):
    """The commit is applied and the connection dropped: the push reads the repository back, finds the folder
    there and succeeds with the branch's head (no error claiming that nothing was committed). The push is still one
    commit: a client that retries the commit (huggingface_hub's Xet path does) names the head it was planned on, so
    the retry is refused instead of applied a second time."""
    import huggingface_hub.constants

    online.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", transfer != "xet")
    hub = start_hub(request, transfer)
    hub.fail_next("commit", status=APPLY_THEN_DROP)
    commit = upload(hub, "org/lost", staging)
    assert not hub.failures["commit"]
    assert hub.repo("org/lost").branches["main"] == commit
    assert hub.commit_count("org/lost") == 2  # the repository's first commit and the push
    files = hub.files("org/lost")
    for path in BINARY:  # the content (regular, LFS) or the pointer (Xet) of today's bytes
        stored = files[path]
        sha256 = stored.sha256 if isinstance(stored, LfsPointer) else hashlib.sha256(stored).hexdigest()
        assert sha256 == hashlib.sha256((staging / path).read_bytes()).hexdigest()
    assert files["config.json"] == (staging / "config.json").read_bytes()


@pytest.mark.parametrize("transfer,endpoint", [
    ("lfs", "lfs-upload"), pytest.param("xet", "xet-xorb", marks=needs_xet),
])
def test_a_failed_upload_over_an_older_version_is_not_taken_for_success(request, online, staging, transfer,
                                                                         endpoint):
    """The repository holds last week's weights; today's fail to upload. Reading the repository back must compare
    LFS/Xet files by content (sha256), so the push fails naming the weights instead of reporting success."""
    import huggingface_hub.constants

    from iamm.hub.push import PushError

    online.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", transfer == "lfs")
    hub = start_hub(request, transfer)
    first = upload(hub, "org/older", staging)
    weights = staging / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + random.Random(1).randbytes(16))  # new weights, same size
    hub.fail_next(endpoint, status=403)
    with pytest.raises(PushError) as err:
        upload(hub, "org/older", staging)
    message = str(err.value)
    assert "does not hold these files of this push (or holds other versions): model.safetensors." in message
    assert hub.repo("org/older").branches["main"] == first
    assert hub.lfs_files("org/older")["model.safetensors"].sha256 != hashlib.sha256(weights.read_bytes()).hexdigest()


# ---- what a push deletes and what it never uploads, in each upload mode ----------------------------------------
TRANSFERS = ["regular", "lfs", pytest.param("xet", marks=needs_xet)]


def client_for(monkeypatch, transfer):
    """huggingface_hub as it talks to a server of this mode: Xet only for the Xet server (hf_xet may be installed)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", transfer != "xet")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, word_tokenizer):
    """A tiny IAMM checkpoint as save_pretrained writes it, with a train_summary.json and a generation_config.json."""
    from tests.helpers.tiny_model import IAMMModelTester

    folder = tmp_path_factory.mktemp("model") / "iamm"
    model = IAMMModelTester(vocab_size=len(word_tokenizer), use_implicit_association=False).create_model().eval()
    model.save_pretrained(folder, tokenizer=word_tokenizer)
    (folder / "train_summary.json").write_text(json.dumps({"global_step": 1}))
    assert (folder / "generation_config.json").exists() and (folder / "model.safetensors").exists()
    return folder


def push_folder(hub, folder, repo_id, **kwargs):
    from iamm.hub.push import PushArguments, push

    kwargs.setdefault("kind", "model")
    return push(PushArguments(folder=str(folder), repo_id=repo_id, endpoint=hub.endpoint, token="hf_test_token",
                              **kwargs))


@pytest.mark.parametrize("transfer", TRANSFERS)
def test_a_push_deletes_only_what_it_pushed_and_nobody_changed(request, monkeypatch, model_folder, tmp_path,
                                                                  transfer):
    """Files another client committed under names this package also uses (a package module, a weights shard) are
    kept; a file this package pushed and another client changed since is kept; a file it pushed, unchanged, that the
    folder no longer has is deleted. A repository whose earlier push left no record keeps what it cannot attribute."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from iamm.hub.push import MANIFEST

    client_for(monkeypatch, transfer)
    hub = start_hub(request, transfer)
    api = HfApi(endpoint=hub.endpoint, token="hf_test_token")
    folder = tmp_path / "iamm"
    shutil.copytree(model_folder, folder)

    first = push_folder(hub, folder, "org/shared")
    assert MANIFEST in first["files"] and first["deleted"] == [] == first["kept"]
    record = json.loads(hub.files("org/shared")[MANIFEST])
    assert record["kind"] == "model" and set(record["files"]) == set(first["files"]) - {MANIFEST}
    theirs = {"data.py": b"# another client's data module\n", "evaluation.py": b"# theirs\n",
              "model-fp16.safetensors": b"\0fp16 weights\xff" * 64,
              "generation_config.json": b'{"max_new_tokens": 7}\n'}  # ours, changed by them
    api.create_commit("org/shared", [CommitOperationAdd(p, data) for p, data in theirs.items()],
                      commit_message="another client")
    (folder / "generation_config.json").unlink()
    (folder / "train_summary.json").unlink()
    second = push_folder(hub, folder, "org/shared")
    files = hub.files("org/shared")
    assert second["deleted"] == ["train_summary.json"] and "train_summary.json" not in files
    assert second["kept"] == ["data.py", "evaluation.py", "generation_config.json", "model-fp16.safetensors"]
    for path, data in theirs.items():
        stored = files[path]
        assert (stored == data) if isinstance(stored, bytes) else stored.sha256 == hashlib.sha256(data).hexdigest()
    notes = " ".join(second["notes"])
    assert "generation_config.json: changed since this package pushed them" in notes
    assert "data.py, evaluation.py, model-fp16.safetensors: not written by an earlier push of this package" in notes

    # a repository whose earlier push predates the record: nothing is deleted, and the push says why
    shutil.copy(model_folder / "train_summary.json", folder / "train_summary.json")
    push_folder(hub, folder, "org/older")
    api.delete_file(MANIFEST, "org/older")
    (folder / "train_summary.json").unlink()
    third = push_folder(hub, folder, "org/older")
    assert third["deleted"] == [] and third["kept"] == ["train_summary.json"]
    assert "holds no record of earlier pushes of this package (no .iamm_push.json)" in third["notes"][0]
    assert "train_summary.json" in hub.files("org/older") and MANIFEST in hub.files("org/older")
    assert not hub.unhandled, hub.unhandled


SPACE_FILES = {
    "app.py": b"import gradio\n", "requirements.txt": b"gradio\n", "README.md": b"---\nsdk: gradio\napp_file: app.py\n---\n",
    "assets/logo.png": b"\x89PNG\r\n\x1a\n\0" + bytes(range(256)),  # binary: LFS/Xet storage on those servers
}
SECRETS = {".env": b"HF_TOKEN=hf_secret\n", "config/.netrc": b"machine huggingface.co password hf_secret\n",
           ".git-credentials": b"https://user:hf_secret@huggingface.co\n", "keys/id_rsa": b"-----BEGIN KEY-----\n",
           "deploy/server.pem": b"-----BEGIN CERTIFICATE-----\n", ".ssh/config": b"Host hub\n"}


@pytest.mark.parametrize("transfer", TRANSFERS)
def test_a_push_never_uploads_secrets_or_follows_links_out_of_the_folder(request, monkeypatch, tmp_path, transfer):
    from iamm.hub.folders import IncompleteFolderError
    from iamm.hub.push import MANIFEST

    client_for(monkeypatch, transfer)
    hub = start_hub(request, transfer)
    space = tmp_path / "space"
    for path, data in {**SPACE_FILES, **SECRETS}.items():
        (space / path).parent.mkdir(parents=True, exist_ok=True)
        (space / path).write_bytes(data)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "token.txt").write_text("hf_secret\n")
    (space / "notes.txt").symlink_to(outside / "token.txt")
    (space / "more").symlink_to(outside, target_is_directory=True)

    def sent():
        return [r for r in hub.requests if not r.startswith(("GET ", "HEAD "))]

    # a link leading out of the folder is refused, named, before any request (a linked file, then a linked folder)
    with pytest.raises(IncompleteFolderError, match=r"more is a symbolic link leading outside .*space"):
        push_folder(hub, space, "org/demo", kind="space")
    (space / "more").unlink()
    with pytest.raises(IncompleteFolderError, match=r"notes.txt is a symbolic link .*leading outside .*space"):
        push_folder(hub, space, "org/demo", kind="space", dry_run=True)
    assert not hub.requests
    (space / "notes.txt").unlink()
    (space / "notes.txt").symlink_to("app.py")  # a link inside the folder: its content is published

    planned = push_folder(hub, space, "org/demo", kind="space", dry_run=True)
    assert [f["path"] for f in planned["upload"]] == sorted([MANIFEST, "notes.txt", *SPACE_FILES])
    assert sorted(planned["left_out"]) == sorted([p for p in SECRETS if p != ".ssh/config"] + [".ssh/"])
    assert "would create it" in planned["repository"] and not sent()

    result = push_folder(hub, space, "org/demo", kind="space")
    files = hub.files("org/demo", "space")
    assert sorted(result["files"]) == sorted(f["path"] for f in planned["upload"]) == sorted(set(files) - {".gitattributes"})
    assert result["left_out"] == planned["left_out"]
    assert files["notes.txt"] == SPACE_FILES["app.py"]
    assert not any(isinstance(data, bytes) and b"hf_secret" in data for data in files.values())
    if transfer != "regular":
        assert set(hub.lfs_files("org/demo", "space")) == {"assets/logo.png"}
    # the same rules for a model: a weights file linked from outside the folder is refused before any upload
    before = sent()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "iamm", "auto_map": {}}))
    (model / "model.safetensors").symlink_to(outside / "token.txt")
    with pytest.raises(IncompleteFolderError, match=r"model.safetensors is a symbolic link .*leading outside"):
        push_folder(hub, model, "org/model")
    assert sent() == before


def test_a_commit_made_by_someone_else_meanwhile_fails_the_push(request, monkeypatch, model_folder, tmp_path):
    """The push is planned on the branch's head (what to delete, by the previous push's record): a commit another
    client makes after that is never overwritten or undone. The push's commit is refused (`parent_commit`), it
    fails naming what the repository lacks, and neither its files nor its planned deletion land."""
    from huggingface_hub import CommitOperationAdd, HfApi

    import importlib

    hub_push = importlib.import_module("iamm.hub.push")  # (the package exports a function of the same name)
    client_for(monkeypatch, "regular")
    hub = start_hub(request, "regular")
    api = HfApi(endpoint=hub.endpoint, token="hf_test_token")
    folder = tmp_path / "iamm"
    shutil.copytree(model_folder, folder)
    (folder / "train_summary.json").write_text(json.dumps({"global_step": 2}))
    push_folder(hub, folder, "org/raced")
    (folder / "generation_config.json").unlink()  # the next push plans to delete it (its own, unchanged)
    (folder / "train_summary.json").write_text(json.dumps({"global_step": 3}))
    planned = hub_push.plan_deletions

    def plan_then_someone_commits(*args, **kwargs):
        plan = planned(*args, **kwargs)
        api.create_commit("org/raced", operations=[CommitOperationAdd("notes.md", b"written meanwhile")],
                          commit_message="another client")
        return plan

    monkeypatch.setattr(hub_push, "plan_deletions", plan_then_someone_commits)
    with pytest.raises(hub_push.PushError, match="does not hold these files of this push.*train_summary.json"):
        push_folder(hub, folder, "org/raced")
    files = hub.files("org/raced")
    assert files["notes.md"] == b"written meanwhile"  # the other client's commit stands
    assert "generation_config.json" in files  # the planned deletion was not applied
    assert json.loads(files["train_summary.json"]) == {"global_step": 2}  # nor this push's files


def test_a_space_folder_keeps_real_folders_beside_links_to_them_and_names_every_secret(tmp_path):
    from iamm.hub.folders import folder_files

    space = tmp_path / "space"
    (space / "z_real").mkdir(parents=True)
    (space / "app.py").write_text("import z_real.f")
    (space / "z_real" / "f.py").write_text("x = 1")
    (space / "a_link").symlink_to(space / "z_real", target_is_directory=True)  # walked before z_real by name
    (space / "z_real" / "up").symlink_to(space, target_is_directory=True)  # a loop: not followed
    (space / ".cache" / "huggingface").mkdir(parents=True)
    (space / ".cache" / "huggingface" / "token").write_text("hf_secret")
    files, left_out = folder_files(str(space))
    assert sorted(files) == ["a_link/f.py", "app.py", "z_real/f.py"]  # the real folder, and the link's name too
    assert left_out == [".cache/"]  # named, though .cache is never pushed anyway
