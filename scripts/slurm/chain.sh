#!/bin/bash
# Submit a chain of K dependent Slurm jobs for one long JetMoE run.
#
#   scripts/slurm/chain.sh [chain options] [sbatch options] SCRIPT [DECK] [block/key=value ...]
#
#   SCRIPT            the job template: scripts/slurm/h100.sbatch or scripts/slurm/cpu.sbatch
#                     (the first argument that is an existing file)
#   DECK, overrides   passed to SCRIPT unchanged, identical for every job of the chain
#   sbatch options    anything else before SCRIPT goes to every sbatch call; write them as
#                     --option=value (e.g. --nodes=4 --time=24:00:00 --account=proj)
#
# Chain options:
#   -k, --count K       number of jobs (default 4)
#   -r, --run-dir DIR   run directory shared by the chain (default $JETMOE_RUN_DIR, else
#                       ./runs/JOBNAME): checkpoints/, logs/<jobid>/, COMPLETED
#   -a, --after JOBID   the first job also waits for JOBID (afterany)
#   -n, --dry-run       print the sbatch commands, submit nothing
#   -h, --help
#
# Job i+1 starts when job i has ended, whatever its state (--dependency=afterany): time limit,
# preemption, node failure or a clean stop at the SIGTERM the template asks for 300 s before
# its time limit (#SBATCH --signal=B:TERM@300), after which jetmoe writes a checkpoint and exits.
# The restart is decided when a job starts, not here: every job runs with JETMOE_RESTART=auto
# and the template passes `-r NEWEST_CHECKPOINT` when the checkpoint directory has one. The
# first job uses $JETMOE_RESTART if you set it (none, or a checkpoint file). When a job finishes
# the whole run it writes RUN_DIR/COMPLETED and cancels the jobs left in the chain.
set -euo pipefail

die() { echo "chain.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

count=4
run_dir=${JETMOE_RUN_DIR:-}
after=
dry_run=0
sbatch_opts=()
script=
while [[ $# -gt 0 ]]; do
  case $1 in
    -k | --count) [[ $# -ge 2 ]] || die "$1 needs a value"; count=$2; shift 2 ;;
    --count=*) count=${1#*=}; shift ;;
    -r | --run-dir) [[ $# -ge 2 ]] || die "$1 needs a value"; run_dir=$2; shift 2 ;;
    --run-dir=*) run_dir=${1#*=}; shift ;;
    -a | --after) [[ $# -ge 2 ]] || die "$1 needs a value"; after=$2; shift 2 ;;
    --after=*) after=${1#*=}; shift ;;
    -n | --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *)
      if [[ -f $1 ]]; then
        script=$1
        shift
        break
      fi
      sbatch_opts+=("$1")
      shift
      ;;
  esac
done
[[ -n $script ]] || { usage >&2; die "no job script given (e.g. scripts/slurm/h100.sbatch)"; }
[[ $count =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive integer, got '$count'"
script_args=("$@")
command -v sbatch >/dev/null || ((dry_run)) || die "sbatch not found: run this on a Slurm login node"

# Job name: from the sbatch options, else the script's #SBATCH line, else the script's name.
job_name=
for ((i = 0; i < ${#sbatch_opts[@]}; i++)); do
  case ${sbatch_opts[i]} in
    --job-name=*) job_name=${sbatch_opts[i]#*=} ;;
    -J | --job-name) job_name=${sbatch_opts[i + 1]:-} ;;
    -J?*) job_name=${sbatch_opts[i]#-J} ;;
  esac
done
if [[ -z $job_name ]]; then
  job_name=$(sed -n 's/^#SBATCH[[:space:]]\{1,\}\(--job-name=\|-J[[:space:]]*\)\([^[:space:]]*\).*/\2/p' "$script" | head -n 1)
fi
job_name=${job_name:-$(basename "$script" .sbatch)}

run_dir=${run_dir:-$PWD/runs/$job_name}
run_dir=$(realpath -m "$run_dir")
# Where the jobs will look for checkpoints (the same rules as the templates).
out_dir=$run_dir
user_ckpt=
for kv in "${script_args[@]}"; do
  case $kv in
    job/output_dir=*) out_dir=${kv#*=} ;;
    checkpoint/dir=*) user_ckpt=${kv#*=} ;;
  esac
done
if [[ $out_dir != /* ]]; then out_dir=$PWD/$out_dir; fi
if [[ -n $user_ckpt ]]; then
  ckpt_dir=$user_ckpt
  if [[ $ckpt_dir != /* ]]; then ckpt_dir=$out_dir/$ckpt_dir; fi
else
  ckpt_dir=${JETMOE_CKPT_DIR:-$out_dir/checkpoints}
fi

if [[ -f $run_dir/COMPLETED ]]; then
  die "$run_dir/COMPLETED exists: that run has finished. Remove the file to train further, or use another --run-dir."
fi
newest=$(find "$ckpt_dir" -maxdepth 1 -type f -name "${JETMOE_CKPT_GLOB:-*.h5}" ! -name '*.tmp' \
  -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2- || true)

first_restart=${JETMOE_RESTART:-auto}
((dry_run)) || mkdir -p "$run_dir"
jobs_file=$run_dir/chain-$(date +%Y%m%d-%H%M%S).jobs
export JETMOE_RUN_DIR=$run_dir JETMOE_CHAIN_JOBS=$jobs_file

echo "chain.sh: $count job(s) of $script as '$job_name'"
echo "  run dir:     $run_dir"
echo "  checkpoints: $ckpt_dir (newest now: ${newest:-none})"
echo "  first job:   JETMOE_RESTART=$first_restart"

prev=$after
ids=()
for ((k = 1; k <= count; k++)); do
  restart=auto
  if ((k == 1)); then restart=$first_restart; fi
  dep=()
  if [[ -n $prev ]]; then dep=("--dependency=afterany:$prev"); fi
  cmd=(sbatch --parsable "--job-name=$job_name" "${dep[@]}" "${sbatch_opts[@]}" "$script" "${script_args[@]}")
  printf -v shown '%q ' "${cmd[@]}"
  if ((dry_run)); then
    id=DRYRUN$k
    echo "  [$k/$count] JETMOE_RESTART=$restart $shown"
  else
    id=$(JETMOE_RESTART=$restart "${cmd[@]}")
    id=${id%%;*} # --parsable prints "jobid" or "jobid;cluster"
    [[ -n $id ]] || die "sbatch returned no job id for job $k"
    echo "$id" >>"$jobs_file"
    echo "  [$k/$count] job $id  ($shown)"
  fi
  ids+=("$id")
  prev=$id
done

((dry_run)) && exit 0
echo "job ids in $jobs_file"
echo "watch:      squeue -j $(IFS=,; echo "${ids[*]}")"
echo "logs:       $run_dir/logs/<jobid>/jetmoe.log"
echo "stop chain: scancel ${ids[*]}"
