from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_tasks import default_task_backend

from examples.django_shop.shop.tasks import send_welcome


@csrf_exempt
def signup(request: HttpRequest) -> JsonResponse:
    result = send_welcome.enqueue(request.GET["email"])  # stored before the response
    return JsonResponse({"task": result.id}, status=202)


def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    result = default_task_backend.get_result(task_id)
    value = result.return_value if result.status == "SUCCESSFUL" else None
    return JsonResponse({"status": result.status, "return_value": value})
