#!/usr/bin/env bash
# The benchmark fits that want a GPU box, as one resumable command for the offline device machine.
#
# Here, once (both folders are git-ignored and travel with the working tree):
#   python benchmarks/pack_for_device.py --out .devicedata     # the sets, pre-resized to 128 px
#   bash benchmarks/anomalib_wheels.sh                           # anomalib's wheels into .whl/
# There (carry .devicedata and .whl), as often as the device's time limit asks:
#   DEFECTMINE_CODE_VERSION=<commit> timeout 540 bash benchmarks/on_device.sh [STAGE ...]   # stop before the call's limit
#
# Stages (default: all, in this order):
#   losses     side_by_side.py: ours on both sets (every loss of the classifier, LIAC, FCDD, K = 10/40/80, 3 seeds)
#   peers      side_by_side.py: anomalib's five peers on both sets (Cflow is the slow one)
#   backbones  fcdd_backbones.py: cnn, vgg16, resnet18, inception_v3 on both sets, K = 80, 3 seeds
#   mining     mining_sweep.py: both sets, K = 1 ... 80, 3 seeds
#   pixels     the pixel-level issues, three scripts side by side (OMP_NUM_THREADS=1 each fit), most wanted first:
#              side_by_side.py SegDec rows (seeds 0-2; 'SegDec (60 epochs)' too), segmentation.py (Table 1
#              analogue, then the DLI ablation, then the data-fraction study, then our SSL encoder vs scratch;
#              40 epochs at 128 px) and
#              zero_label.py --budget gpu (vae_gradcam 40 epochs, draem 80). Needs smp's wheel in .whl/:
#              pip download --no-deps -d .whl segmentation-models-pytorch
#   pixels_wide  the same studies breadth first, for a single short call: seed 0 of each study still missing
#              (encoders, ablation, data fractions, SSL encoder vs scratch) as four segmentation.py queues side
#              by side, beside zero_label.py --budget gpu's missing seeds; 'pixels' then adds seeds 1-2.
#   pixels_seeds  one short call for the rows that the issues' tables need at three seeds: every encoder
#              row at seeds 0-2 (11 fits at once: a fit's time hardly moves with the load, it waits on the
#              GPU), the cut-paste ablation rows, and every zero_label.py seed still missing (8 at once).
#   encoders   the encoder rows alone (seeds 0-2, 8 at once): what pixels_seeds left, in a ~260-s call.
#   fractions_wce  the data-fraction study's weighted-CE rows (seed 0, 8 fits at once): fits a ~300 s call.
#   levers     levers.py (issue 18), two queues side by side (OMP_NUM_THREADS=1 each fit): FCDD's recipe at one
#              seed per set (its GPU fit time), the recipe from our self-supervised weights at the recipe's
#              width against scratch (--stages ssl: pretrains first), then FCDD's lever rows not yet kept (K = 80,
#              3 seeds, all levers but resolution and tiles: the device pack is 128 px); and LIAC's and the
#              classifier's lever rows, the variants that moved FCDD first, then the rest, recipe and splits
#   mining_seg the damage-mining sweep on magnetic_tile_seg_s0 (273 training defects: ratios up to 1/2.44) with
#              FCDD's Magnetic Tile recipe (levers.py --print-recipe), one (seed, ratio) per process (done
#              2026-11-26: a rerun only re-summarises)
#   draem_peer zero_label.py's anomalib Draem peer at the GPU budget (draem's 80 epochs, both sets, 3 seeds), beside
#              our draem's --budget gpu rows. Needs anomalib's wheels in .whl/ (anomalib_wheels.sh). Run it
#              in a call of its own: beside the pixels stage (18 fits on 16 cores) it finished no fit in 545 s.
#   synthesis  synthesis.py at the GPU size (128 px, 8000 diffusion steps, 3 seeds, 100 and 400 synthetic
#              defects; its 64 px CPU rows stay beside). Needs diffusers in .whl/:
#              pip download --no-deps -d .whl diffusers importlib-metadata
# (The pretraining benchmark is left out: its rows pair with weights pretrained here, on the CPU.)
#
# Every benchmark keeps each fit's row as soon as it is done and skips the rows it already has (the
# committed ones included), so a call cut off by the time limit loses at most the fits in flight: run
# the same command again. The rows come back in $OUT/results.tar (benchmarks/results and the mining
# sweep's runs/bench/mining-*), written when the script exits for any reason; what the scripts write
# into BENCHMARKS.md there stays there. Unpack the tar at the repository root here, then re-render
# the tables: side_by_side.py --report, fcdd_backbones.py --datasets magnetic_tile elpv --seeds 0 1 2 --report, mining_sweep.py --resume.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
JOBS="${JOBS:-12}"
SITE="${SITE:-/tmp/site}"
OUT="${OUT:-$REPO/runs/device-out}"

if [ ! -d .devicedata ]; then
  echo "on_device.sh: .devicedata/ is missing; run 'python benchmarks/pack_for_device.py --out .devicedata' here and carry it." >&2
  exit 2
fi
if [ -d .whl ] && [ ! -d "$SITE/anomalib" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export DEFECTMINE_SHARED="$REPO/.devicedata/shared" DEFECTMINE_ELPV="$REPO/.devicedata/elpv"
export PYTHONPATH="$REPO/src:$REPO/benchmarks:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

pack_results() {
  mkdir -p "$OUT"
  tar -cf "$OUT/results.tar" benchmarks/results $(ls -d runs/bench/mining-* 2>/dev/null) 2>/dev/null
  echo "on_device.sh: rows packed into $OUT/results.tar"
}
trap pack_results EXIT
# A stage runs in the background while this shell waits (below), so that `timeout`'s TERM interrupts the
# wait at once and the EXIT trap packs the rows done so far; a shell waiting on a foreground command
# would only handle the signal after it, and be killed first.
trap 'echo "on_device.sh: stopped by a signal; packing the finished rows"; exit 143' TERM INT

stage() {
  echo "=== $(date +%T) $1"
  shift
  python3 "$@" || echo "=== stage failed (exit $?); its finished rows are kept"
}

STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(losses peers backbones mining)

SEG="benchmarks/segmentation.py --image-size 128 --epochs 40 --eval-every 5 --no-write"
# The pixel studies, named once: 'pixels' runs each at seeds 0-2 in turn, 'pixels_wide' seed 0 of all at once.
TABLE1="--encoders resnet18 --losses bce_dice bce focal balanced weighted_ce --injection off on"
ENCODERS="--encoders mobileone_s1 resnest50d --losses bce_dice weighted_ce --injection off on"
ABLATION="--encoders resnet18 --losses bce_dice --blends poisson cutpaste --keep-clean 0.1 0.5"
FRACTIONS="--encoders resnet18 --losses bce_dice weighted_ce --injection on off --fractions 0.1 0.25 0.5 0.75"
SSL_PAIRS="--encoders cnn --losses focal bce_dice --injection off --weights scratch ssl"
ZERO_LABEL="benchmarks/zero_label.py --budget gpu --seeds 0 1 2 --jobs 3"
encoders() { stage encoders $SEG --seeds 0 1 2 --jobs 8 $ENCODERS; }
pixels() {
  (
    export OMP_NUM_THREADS=1
    stage segdec benchmarks/side_by_side.py --only ours --datasets magnetic_tile --seeds 0 1 2 --jobs 4 --no-write \
      --models SegDec "SegDec (no DLI)" "SegDec (60 epochs)" &
    (
      stage table1 $SEG --seeds 0 1 2 --jobs 8 $TABLE1
      encoders
      stage ablation $SEG --seeds 0 1 2 --jobs 8 $ABLATION
      stage fractions $SEG --seeds 0 1 2 --jobs 8 $FRACTIONS
      stage ssl $SEG --seeds 0 1 2 --jobs 8 $SSL_PAIRS
    ) &
    stage zero_label $ZERO_LABEL &
    wait
  )
}
pixels_wide() {
  (
    export OMP_NUM_THREADS=1
    stage encoders0 $SEG --seeds 0 --jobs 4 $ENCODERS &
    stage ablation0 $SEG --seeds 0 --jobs 2 $ABLATION &
    stage fractions0 $SEG --seeds 0 --jobs 4 $FRACTIONS &
    stage ssl0 $SEG --seeds 0 --jobs 2 $SSL_PAIRS &
    stage zero_label $ZERO_LABEL &
    wait
  )
}
pixels_seeds() {
  (
    export OMP_NUM_THREADS=1
    stage encoders $SEG --seeds 0 1 2 --jobs 11 $ENCODERS &
    stage ablation0 $SEG --seeds 0 --jobs 2 $ABLATION &
    stage zero_label $ZERO_LABEL --jobs 8 &
    wait
  )
}
# The first LIAC and classifier variants: the levers that moved FCDD (flips' worth, colour, width, budget, TTA).
OTHERS_FIRST="augment=none augment=flips+color width=16 epochs=50 tta=True"
levers() {
  (
    export OMP_NUM_THREADS=1
    (
      stage recipe_gpu benchmarks/levers.py --detectors fcdd --stages recipe --recipe-seeds 0 --jobs 6 --no-write
      stage ssl benchmarks/levers.py --detectors fcdd --stages ssl --jobs 6 --no-write
      stage levers_fcdd benchmarks/levers.py --detectors fcdd --stages levers --jobs 6 --no-write
    ) &
    (
      stage levers_others_first benchmarks/levers.py --detectors liac classifier --variants $OTHERS_FIRST --jobs 8 --no-write
      stage levers_others benchmarks/levers.py --detectors liac classifier --stages levers recipe splits --jobs 8 --no-write
    ) &
    wait
  )
}
run_stages() {
for name in "${STAGES[@]}"; do
  case "$name" in
    losses) stage losses benchmarks/side_by_side.py --only ours --jobs "$JOBS" ;;
    peers) stage peers benchmarks/side_by_side.py --only anomalib --jobs "$JOBS" ;;
    backbones) stage backbones benchmarks/fcdd_backbones.py --datasets magnetic_tile elpv --seeds 0 1 2 --jobs "$JOBS" ;;
    mining) stage mining benchmarks/mining_sweep.py --resume --jobs 6 --quiet ;;
    pixels) pixels ;;
    pixels_wide) pixels_wide ;;
    pixels_seeds) pixels_seeds ;;
    encoders) (export OMP_NUM_THREADS=1; encoders) ;;
    fractions_wce) OMP_NUM_THREADS=1 stage fractions_wce $SEG --seeds 0 --jobs 8 $FRACTIONS ;;
    levers) levers ;;
    mining_seg) OMP_NUM_THREADS=1 stage mining_seg benchmarks/mining_sweep.py --datasets magnetic_tile_seg_s0 --seeds 0,1,2 \
                  --jobs 14 --resume --quiet --no-write --section mining-seg \
                  --ratios 273/666,1/4,1/8,1/16,1/32,1/64,1/128,unsupervised \
                  --params "$(python3 benchmarks/levers.py --print-recipe magnetic_tile fcdd)" ;;
    draem_peer) stage draem_peer benchmarks/zero_label.py --configs anomalib_draem:0 --budget gpu --seeds 0 1 2 --jobs 3 ;;
    synthesis) stage synthesis benchmarks/synthesis.py --image-size 128 --train-steps 8000 --device cuda \
                 --seeds 0 1 2 --counts 100 400 --no-write ;;
    *) echo "on_device.sh: unknown stage '$name' (losses, peers, backbones, mining, pixels, pixels_wide, pixels_seeds, encoders, fractions_wce, levers, mining_seg, draem_peer, synthesis)" >&2; exit 2 ;;
  esac
done
}
run_stages &
wait $!
