//! What every reader of ECS tasks needs the same way: the ListTasks paging loop and the
//! address of an awsvpc task.

use aws_sdk_ecs::error::SdkError;
use aws_sdk_ecs::operation::list_tasks::ListTasksError;
use aws_sdk_ecs::types::{DesiredStatus, Task};

/// The private IPv4 address on the task's ENI attachment (awsvpc tasks; moto, too, reports it
/// only there).
pub fn eni_address(task: &Task) -> Option<&str> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
}

/// The ARNs of the tasks of `cluster` (of `service`, when given) whose desired status is
/// RUNNING, every page of them. `before_call` runs before each request: to count it, or to
/// wait for a rate limiter.
pub async fn running_task_arns<F, Fut>(
    client: &aws_sdk_ecs::Client,
    cluster: &str,
    service: Option<&str>,
    mut before_call: F,
) -> Result<Vec<String>, SdkError<ListTasksError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut arns = Vec::new();
    let mut next: Option<String> = None;
    loop {
        before_call().await;
        let page = client
            .list_tasks()
            .cluster(cluster)
            .set_service_name(service.map(str::to_string))
            .desired_status(DesiredStatus::Running)
            .set_next_token(next.take())
            .send()
            .await?;
        arns.extend(page.task_arns().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(arns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Attachment, KeyValuePair};

    fn kv(name: &str, value: &str) -> KeyValuePair {
        KeyValuePair::builder().name(name).value(value).build()
    }

    #[test]
    fn the_address_comes_from_the_eni_attachment_only() {
        let task = Task::builder()
            .attachments(
                Attachment::builder()
                    .r#type("ServiceConnect")
                    .details(kv("privateIPv4Address", "10.9.9.9"))
                    .build(),
            )
            .attachments(
                Attachment::builder()
                    .r#type("ElasticNetworkInterface")
                    .details(kv("subnetId", "subnet-1"))
                    .details(kv("privateIPv4Address", "10.0.2.2"))
                    .build(),
            )
            .build();
        assert_eq!(eni_address(&task), Some("10.0.2.2"));
        assert_eq!(eni_address(&Task::builder().build()), None);
    }
}
