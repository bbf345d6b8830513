#!/bin/bash
# Runs the solver as one job step of a batch job and keeps the job alive
# across its time limit; every script in slurm/ ends with it:
#
#   exec slurm/solver-step.sh RUN_DIR [python -m solver run arguments...]
#
# - the first start writes into RUN_DIR; a requeued start (or a resubmission
#   with the same RUN_DIR) continues with --restart latest;
# - SIGUSR2 to the batch shell (#SBATCH --signal=B:USR2@SECONDS, or
#   scancel --batch --signal=USR2 JOB) is forwarded to the ranks: they agree
#   on a step, write a checkpoint and exit 3, and the job requeues itself;
# - scancel (SIGTERM) is forwarded too: the ranks checkpoint and stop, and the
#   job is not requeued;
# - any other exit status (2 bad input, 4 a state that blew up, 1 a failure)
#   ends the job without a requeue, and so does a run that has been requeued
#   SOLVER_MAX_REQUEUES times (default 100).
# Launcher: srun --mpi=pmix (SOLVER_LAUNCHER overrides it, e.g.
# "mpiexec --bind-to none" to use Open MPI's own launcher inside the allocation).
set -uo pipefail
RUN=$1; shift

threads=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=$threads NUMBA_NUM_THREADS=$threads
export SOLVER_PROGRESS=plain
export HWLOC_COMPONENTS=${HWLOC_COMPONENTS:--opencl}   # an OpenCL driver loaded by hwloc takes SIGUSR1 (README)
read -r -a launcher <<< "${SOLVER_LAUNCHER:-srun --mpi=pmix --cpus-per-task=$threads}"

args=(run "$@" --output "$RUN")
if ls "$RUN"/checkpoints/step_*.h5 >/dev/null 2>&1; then
    args+=(--restart latest)              # a requeued (or resubmitted) job continues where it stopped
fi
echo "solver-step: job ${SLURM_JOB_ID:-?} start $((${SLURM_RESTART_COUNT:-0} + 1)) on ${SLURM_JOB_NODELIST:-?} at $(date +%T): ${launcher[*]} python -m solver ${args[*]}"

cancelled=0
"${launcher[@]}" python -m solver "${args[@]}" &
pid=$!
trap 'kill -USR2 $pid 2>/dev/null' USR2
trap 'cancelled=1; kill -TERM $pid 2>/dev/null' TERM INT
wait $pid; rc=$?
while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done   # a trap interrupted the wait: wait again

if [ "$rc" -eq 3 ] && [ "$cancelled" -eq 0 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    if [ "${SLURM_RESTART_COUNT:-0}" -ge "${SOLVER_MAX_REQUEUES:-100}" ]; then
        echo "solver-step: stopped with a checkpoint, but requeued ${SLURM_RESTART_COUNT} times already: not again"
    else
        echo "solver-step: stopped with a checkpoint at $(date +%T); requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID" && exit 0
        echo "solver-step: scontrol requeue failed: resubmit this script to continue"
    fi
fi
echo "solver-step: exit status $rc"
exit "$rc"
