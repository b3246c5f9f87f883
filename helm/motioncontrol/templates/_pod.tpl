{{/* The Triton pod, one template for the Deployments (one per track) and the Rollout.
     Context: root (the chart's `$`), version (the model-repository version the pod
     fetches), track (a Deployment's track; none for the Rollout, whose ReplicaSets Argo
     Rollouts tells apart by pod-template hash). */}}
{{- define "mc.podTemplate" -}}
{{- $ := .root -}}
{{- $version := .version -}}
metadata:
  labels:
    {{- include "mc.labels" $ | nindent 4 }}
    {{- include "mc.selector" . | nindent 4 }}
    motioncontrol.dev/model-version: {{ $version | quote }}
spec:
  serviceAccountName: {{ include "mc.serviceAccountName" $ }}
  automountServiceAccountToken: false  # Triton never talks to the API server
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile: {type: RuntimeDefault}
  {{- with $.Values.gpu.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.gpu.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.gpu.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationGracePeriodSeconds: 60
  # The serving image's tritonserver reads no object store: this step copies the
  # track's repository from MinIO and writes each model's instance groups for this pod
  # (values `instances`), whoever built the repository.
  initContainers:
    - name: fetch-repository
      image: {{ include "mc.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      command: [python, -m, serving.repository, fetch, --version, {{ $version | quote }}, --dest, /models]
      env:
        {{- include "mc.storeEnv" $ | nindent 8 }}
        - {name: MC_HOME, value: /tmp/mc}
        - {name: MC_SERVE__GPU_INSTANCES, value: {{ $.Values.instances.gpu | quote }}}
        - {name: MC_SERVE__CPU_INSTANCES, value: {{ $.Values.instances.cpu | quote }}}
        - {name: MC_SERVE__ORCHESTRATOR_INSTANCES, value: {{ $.Values.instances.orchestrator | quote }}}
      resources:
        requests: {cpu: 250m, memory: 512Mi}
        limits: {cpu: "1", memory: 2Gi}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: models, mountPath: /models}
        - {name: scratch, mountPath: /tmp}
  containers:
    - name: tritonserver
      image: {{ include "mc.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args:
        - tritonserver
        - --model-repository=/models
        - --model-control-mode=none
        - --strict-readiness=true
        - --exit-on-error=true
        - --http-port={{ $.Values.ports.http }}
        - --grpc-port={{ $.Values.ports.grpc }}
        - --metrics-port={{ $.Values.ports.metrics }}
        - --allow-metrics=true
        - --allow-gpu-metrics=true
        # p99 latency per model for the canary analysis (nv_inference_request_summary_us)
        - --metrics-config=summary_latencies=true
        - --metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.99:0.001
      env:
        - name: HOME
          value: /tmp
      ports:
        - {name: http, containerPort: {{ $.Values.ports.http }}, protocol: TCP}
        - {name: grpc, containerPort: {{ $.Values.ports.grpc }}, protocol: TCP}
        - {name: metrics, containerPort: {{ $.Values.ports.metrics }}, protocol: TCP}
      startupProbe:
        httpGet: {path: /v2/health/ready, port: http}
        periodSeconds: {{ $.Values.probes.startup.periodSeconds }}
        failureThreshold: {{ $.Values.probes.startup.failureThreshold }}
      readinessProbe:
        httpGet: {path: /v2/health/ready, port: http}
        periodSeconds: {{ $.Values.probes.readiness.periodSeconds }}
        failureThreshold: {{ $.Values.probes.readiness.failureThreshold }}
      livenessProbe:
        httpGet: {path: /v2/health/live, port: http}
        periodSeconds: {{ $.Values.probes.liveness.periodSeconds }}
        failureThreshold: {{ $.Values.probes.liveness.failureThreshold }}
      resources:
        requests:
          cpu: {{ $.Values.resources.requests.cpu | quote }}
          memory: {{ $.Values.resources.requests.memory | quote }}
          nvidia.com/gpu: {{ $.Values.gpu.count }}
        limits:
          cpu: {{ $.Values.resources.limits.cpu | quote }}
          memory: {{ $.Values.resources.limits.memory | quote }}
          nvidia.com/gpu: {{ $.Values.gpu.count }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: dshm, mountPath: /dev/shm}
        - {name: scratch, mountPath: /tmp}
        - {name: models, mountPath: /models, readOnly: true}
  volumes:
    - name: models
      emptyDir: {sizeLimit: {{ $.Values.repositorySize }}}
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ $.Values.shmSize }}}
    - name: scratch
      emptyDir: {sizeLimit: {{ $.Values.scratchSize }}}
{{- end -}}
